"""The house rules, read from the source: which package may import which, and no import cycles between modules.

Every ``import`` and ``from ... import`` counts, the ones inside functions too (a lazy import is still a dependency).
``bench/`` and ``tests/`` sit outside the house and may import anything.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# package -> the other packages it may import. Floors, bottom up: the core; the device tier and the shared LLM
# pieces; the cloud tier and the offline tools; measurement; the top floor.
RULES: dict[str, set[str]] = {
    "tandem": set(),
    "srm_device": {"tandem"},
    "llm_common": {"tandem"},
    "llm_cloud": {"tandem", "srm_device", "llm_common"},
    "merging": {"tandem", "llm_common"},
    "alignment": {"tandem", "llm_common"},
    "eval": {"tandem", "srm_device", "llm_common", "llm_cloud", "merging", "alignment"},
    "pipelines": {"tandem", "srm_device", "llm_common", "llm_cloud", "merging", "alignment", "eval"},
}


def _modules(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file of the ruled packages under ``root``."""
    mods = {}
    for pkg in RULES:
        for path in sorted((root / pkg).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return mods


def _imports(name: str, path: Path, mods: dict[str, Path]) -> set[str]:
    """The in-house modules that module ``name`` imports (relative imports resolved; ``from a import b`` names the
    module ``a.b`` where that is a module)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level:
                base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names if f"{mod}.{a.name}" in mods)
    return {m for m in out if m.split(".")[0] in RULES}


def _owner(mod: str, mods: dict[str, Path]) -> str | None:
    """The in-house module a dotted import name lands in (``a.b.c`` -> ``a.b`` when ``c`` is a name in it)."""
    while mod and mod not in mods:
        mod = mod.rpartition(".")[0]
    return mod or None


def violations(root: Path) -> list[str]:
    """Every import against :data:`RULES`, then every import cycle between modules, as readable lines."""
    mods = _modules(root)
    bad, edges = [], {}
    for name, path in mods.items():
        edges[name] = set()
        for mod in sorted(_imports(name, path, mods)):
            src, dst = name.split(".")[0], mod.split(".")[0]
            if src != dst and dst not in RULES[src]:
                bad.append(f"{path.relative_to(root)}: {name} imports {mod}, but {src} may import only "
                           f"{', '.join(sorted(RULES[src])) or 'nothing in house'}")
            target = _owner(mod, mods)
            if target and target != name:
                edges[name].add(target)
    bad += [f"import cycle among {', '.join(c)}" for c in _cycles(edges)]
    return bad


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], 0
    for start in edges:
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on.add(start)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(edges.get(w, ())))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


def test_the_house_keeps_its_import_rules() -> None:
    assert set(RULES) <= {p.name for p in ROOT.iterdir() if (p / "__init__.py").exists()}
    assert violations(ROOT) == []


def _tree(root: Path, files: dict[str, str]) -> Path:
    for pkg in RULES:
        (root / pkg).mkdir(parents=True, exist_ok=True)
        (root / pkg / "__init__.py").write_text("")
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def test_a_forbidden_import_is_reported(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "srm_device/scoring.py": "import numpy\nfrom tandem import io\n",  # allowed
        "llm_cloud/service/stack.py": "def load():\n    from eval.srm import evaluate_checkpoint\n",  # lazy: counted
        "tandem/io.py": "from ..pipelines import cli\n",  # relative import up to the top floor
        "merging/run.py": "import alignment.seat\n",  # one offline tool into another
    })
    found = violations(root)
    assert len(found) == 3 and all("may import only" in f for f in found), found
    assert any("llm_cloud.service.stack imports eval.srm" in f for f in found)
    assert any("tandem.io imports pipelines" in f and "nothing in house" in f for f in found)
    assert any("merging.run imports alignment.seat" in f for f in found)


def test_an_import_cycle_is_reported(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "eval/a.py": "from eval import b\n",
        "eval/b.py": "def f():\n    from eval.c import g\n",
        "eval/c.py": "import eval.a\n",
        "eval/d.py": "import eval.a\n",
    })
    assert violations(root) == ["import cycle among eval.a, eval.b, eval.c"]
