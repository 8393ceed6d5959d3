"""Tandem's SRM against RecBole 1.2.1's, trained and tested in one run on the same ML-100K data and protocol.

Protocol (RecBole's for sequential models): no filters, time-ordered leave-one-out, full ranking over all items,
history not masked, cross-entropy over all items, early stopping on validation NDCG@10 with the same patience and the
same epoch cap. Equal model hyperparameters: hidden 64, 2 layers, 2 heads, FFN 256, dropout 0.5, max length 50.

What differs is how training examples are fed: RecBole materialises every prefix as its own row (97,171 rows of up to
50 items), Tandem takes the loss at every position of causal windows (the same 97,171 prefix->item pairs in about 7k
windows). Both run on the same number of CPU threads, one after the other.

RecBole runs in its own venv under ``$TANDEM_HOME/bench/recbole-venv``, created on first use with:
``torch==2.13.0``, then ``recbole==1.2.1``, then ``"numpy<2" "pandas<3" "setuptools>=77.0.3,<81"`` (RecBole uses
``np.float``; ray 2.6.3 needs ``pkg_resources``). ``bench/recbole_runner.py`` sets
``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` so RecBole can reload its checkpoint, and switches off the anomaly detection
its import turns on.

    python bench/srm_vs_recbole.py [--epochs 200 --patience 10 --threads 1 --json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eval.srm import evaluate_checkpoint  # noqa: E402
from pipelines.train_srm import train_srm  # noqa: E402
from srm_device.models import default_config  # noqa: E402
from srm_device.training.config import TrainConfig  # noqa: E402
from tandem.data import fetch  # noqa: E402
from tandem.data.options import DatasetOptions, load_dataset  # noqa: E402
from tandem.io import atomic_write_json  # noqa: E402
from tandem.paths import tandem_home  # noqa: E402

RECBOLE_STEPS = (
    ["torch==2.13.0"],
    ["recbole==1.2.1"],
    ["numpy<2", "pandas<3", "setuptools>=77.0.3,<81"],
)
MODEL_NAMES = {"sasrec": "SASRec", "gru4rec": "GRU4Rec"}


def recbole_python() -> Path:
    """Python of RecBole's venv, creating and filling the venv on first use."""
    venv = tandem_home() / "bench" / "recbole-venv"
    py = venv / "bin" / "python"
    ok = py.exists() and subprocess.run([str(py), "-c", "import recbole"], capture_output=True).returncode == 0
    if not ok:
        print(f"creating RecBole venv in {venv} …", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        for step in RECBOLE_STEPS:
            subprocess.run([str(py), "-m", "pip", "install", "-q", *step], check=True)
    return py


def run_recbole(model: str, args: argparse.Namespace) -> dict:
    py = recbole_python()
    data_path = fetch.fetch("ml-100k").parent
    with tempfile.TemporaryDirectory(prefix="recbole-") as work:
        cmd = [str(py), str(ROOT / "bench" / "recbole_runner.py"), "--data-path", str(data_path),
               "--model", MODEL_NAMES[model], "--epochs", str(args.epochs), "--stopping-step", str(args.patience),
               "--threads", str(args.threads), "--seed", str(args.seed), "--workdir", work]
        env = {**os.environ, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1", "OMP_NUM_THREADS": str(args.threads)}
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=work, env=env)
        wall = time.perf_counter() - t0
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"RecBole run failed with exit code {proc.returncode}")
    out = json.loads(lines[-1][len("RESULT "):])
    out["process_seconds"] = wall
    return out


def run_tandem(model: str, args: argparse.Namespace) -> dict:
    opts = DatasetOptions(dataset="ml-100k")
    ds = load_dataset(opts)
    cfg = TrainConfig(epochs=args.epochs, patience=args.patience, threads=args.threads, seed=args.seed)
    with tempfile.TemporaryDirectory(prefix="tandem-") as out:
        t0 = time.perf_counter()
        result = train_srm(ds, opts, model, default_config(model), cfg, out, overwrite=True)
        train_s = time.perf_counter() - t0
        report = evaluate_checkpoint(out, "test")
    return {"model": model, "epochs_run": result.epochs_run, "best_epoch": result.best_epoch,
            "train_seconds": train_s, "valid_ndcg@10": result.best_valid["ndcg@10"], "metrics": report.metrics}


def table(t: dict, r: dict) -> str:
    rows = [("test ndcg@10", "ndcg@10"), ("test hr@10", "hr@10"), ("test mrr@10", "mrr@10"),
            ("test ndcg@20", "ndcg@20")]
    lines = [f"{'':<22}{'tandem':>12}{'recbole':>12}{'tandem/recbole':>16}"]
    for label, key in rows:
        a, b = t["metrics"][key], r["metrics"][key]
        lines.append(f"{label:<22}{a:>12.4f}{b:>12.4f}{a / b if b else float('nan'):>16.3f}")
    a, b = t["train_seconds"], r["train_seconds"]
    lines.append(f"{'train wall time (s)':<22}{a:>12.1f}{b:>12.1f}{a / b:>16.3f}")
    lines.append(f"{'epochs run (best)':<22}{t['epochs_run']:>8} ({t['best_epoch']:>2}){r['epochs_run']!s:>8} "
                 f"({r['best_epoch']!s:>2})")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=sorted(MODEL_NAMES), default="sasrec")
    ap.add_argument("--epochs", type=int, default=200, help="epoch cap for both (default: 200)")
    ap.add_argument("--patience", type=int, default=10, help="early-stopping patience for both (default: 10)")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads for each run (default: 1)")
    ap.add_argument("--seed", type=int, default=2020)
    ap.add_argument("--json", help="write both results and the ratios here")
    args = ap.parse_args()

    print(f"[1/2] Tandem {args.model} …", file=sys.stderr)
    t = run_tandem(args.model, args)
    print(f"      test ndcg@10 {t['metrics']['ndcg@10']:.4f} in {t['train_seconds']:.0f}s", file=sys.stderr)
    print(f"[2/2] RecBole {MODEL_NAMES[args.model]} …", file=sys.stderr)
    r = run_recbole(args.model, args)
    print(f"\n{args.model} on ML-100K, full ranking, {args.threads} thread(s), epoch cap {args.epochs}, "
          f"patience {args.patience}")
    print(table(t, r))
    if args.json:
        ratios = {"ndcg@10": t["metrics"]["ndcg@10"] / r["metrics"]["ndcg@10"],
                  "train_seconds": t["train_seconds"] / r["train_seconds"]}
        atomic_write_json(args.json, {"tandem": t, "recbole": r, "ratios": ratios, "args": vars(args)})


if __name__ == "__main__":
    main()
