"""A real, non-editable install: build the wheel from a copy of the sources, install it into a fresh venv, and run
``tandem`` from outside the checkout, so that nothing is found through the source tree.

The fresh venv takes its third-party dependencies (torch, transformers, ...) from this environment's site-packages
through a ``.pth`` line, so the test needs no network; Tandem itself comes only from the wheel.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("tandem", "llm_common", "srm_device", "llm_cloud", "merging", "alignment", "eval", "pipelines")


def _run(*cmd: str | Path, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=cwd, timeout=300, env=env)
    assert proc.returncode == 0, f"{cmd}: {proc.stderr[-3000:]}"
    return proc


def test_wheel_installs_and_runs_from_a_fresh_venv(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    _run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", tmp_path / "dist",
         src, cwd=tmp_path)
    wheel = next((tmp_path / "dist").glob("tandem_rec-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"pipelines/configs/sft_tiny.yaml", "pipelines/configs/sft_smollm.yaml", "pipelines/cli/main.py"} <= names
    ui = {f"llm_cloud/service/ui/{name}" for name in ("index.html", "app.js", "style.css")}
    assert ui <= names  # the web page ships in the package
    assert not any(n.startswith(("tests/", "bench/")) for n in names)

    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path)
    py = venv / "bin" / "python"
    _run(sys.executable, "-m", "pip", "--python", py, "install", "-q", "--no-deps", "--no-index", wheel, cwd=tmp_path)
    site = Path(_run(py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp_path).stdout
                .strip())
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # third-party packages, not Tandem

    env = {"PATH": "/usr/bin:/bin", "TANDEM_HOME": str(tmp_path / "home"), "TQDM_DISABLE": "1"}
    where = _run(py, "-c", "import pipelines, tandem; from pipelines import configs; "
                 "print(tandem.__file__); print(configs.resolve('sft_tiny'))", cwd=tmp_path, env=env).stdout.split()
    assert all(Path(p).is_relative_to(site) for p in where), where  # from the wheel, not the checkout
    assert "profile: tiny" in Path(where[1]).read_text()
    page = _run(py, "-c", "from llm_cloud.service.app import UI_DIR; print(UI_DIR / 'index.html')", cwd=tmp_path,
                env=env).stdout.strip()
    assert Path(page).is_relative_to(site) and "app.js" in Path(page).read_text()
    tandem = venv / "bin" / "tandem"
    assert "usage: tandem" in _run(tandem, "--help", cwd=tmp_path, env=env).stdout
    assert "--artifacts" in _run(tandem, "serve", "--help", cwd=tmp_path, env=env).stdout
    # The packaged config is found by name and read; the run stops at the first check after it (a foreign --out).
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    proc = subprocess.run([str(tandem), "llm", "sft", "--config", "sft_tiny", "--out", str(foreign)],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert proc.returncode == 2 and "is not a generative-recommender checkpoint" in proc.stderr, proc.stderr
    proc = subprocess.run([str(tandem), "llm", "sft", "--config", "sft_huge"], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=300)
    assert proc.returncode == 2 and "one of sft_smollm, sft_tiny" in proc.stderr, proc.stderr
