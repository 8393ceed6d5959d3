"""The docs agree with the code: the README's command table names real commands, every relative link resolves, the
evidence files parse, and no sentence points at a path that moved or a status that is over."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]
STALE = [
    "../shared/", "in progress", "the issue", "until the reasoning", "arrives with its own",  # status and tracker talk
    "eval/build.py", "eval/thresholds.py", "eval/collab.py", "eval/simulate.py", "eval/split.py", "eval/thinkrec.py",
    "eval/candidate_cache.py", "tandem/cli", "tandem/smollm.py", "tandem/sft_run.py", "alignment/teacher.py",
    "merging/adapters.py", "srm_device/rerank.py", "thinkrec/pipeline.py", "python -m tandem",
]


def _commands() -> set[tuple[str, ...]]:
    from pipelines.cli.main import make_parser

    found, todo = set(), [((), make_parser())]
    while todo:
        path, parser = todo.pop()
        found.add(path)
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                todo += [(path + (name,), sub) for name, sub in action.choices.items()]
    return found


def test_readme_is_a_front_door() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 220, len(lines)
    text = "\n".join(lines)
    assert "make demo" in text and "make test" in text and text.count("curl ") >= 2


def test_every_command_in_the_readme_table_exists() -> None:
    rows = re.findall(r"^\|\s*`tandem ([a-z ]+)`", (ROOT / "README.md").read_text(), flags=re.M)
    assert len(rows) >= 15, rows
    commands = _commands()
    missing = [r for r in rows if tuple(r.split()) not in commands]
    assert not missing, f"README table names commands the CLI does not have: {missing}"
    leaves = {c for c in commands if c and not any(o[: len(c)] == c and o != c for o in commands)}
    listed = {tuple(r.split()) for r in rows}
    unlisted = [" ".join(leaf) for leaf in leaves if leaf not in listed and leaf[:1] not in listed]
    assert not unlisted, f"commands the README table does not list: {unlisted}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_links_resolve_and_nothing_is_stale(page: Path) -> None:
    text = page.read_text()
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if re.match(r"[a-z]+://|mailto:", target):
            continue
        assert (page.parent / target).exists(), f"{page.name}: broken link {target}"
    lowered = text.lower()
    found = [s for s in STALE if s.lower() in lowered]
    assert not found, f"{page.name}: stale text {found}"
    assert not re.search(r"(?<!pipelines/)configs/sft_", text), f"{page.name}: configs/ moved to pipelines/configs/"


def test_docs_pages_exist_and_evidence_parses() -> None:
    names = {p.name for p in (ROOT / "docs").glob("*.md")}
    assert {"architecture.md", "data.md", "device.md", "cloud.md", "service.md", "merging.md", "alignment.md",
            "thinkrec.md", "benchmarks.md"} <= names
    results = sorted((ROOT / "docs" / "results").glob("*.json"))
    assert results
    docs_text = "".join(p.read_text() for p in PAGES)
    for path in results:
        assert isinstance(json.loads(path.read_text()), dict), path.name
        assert f"results/{path.name}" in docs_text, f"{path.name} is not cited by any page"
