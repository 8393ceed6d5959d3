"""The reasoning-gym tasks the alignment benches use, with a reference chain of thought for each problem.

- ``gsm_symbolic``: grade-school word problems; the reference steps are the dataset's own ``answer_cot``.
- ``chain_sum``: short +/− chains (2–3 terms of 1–2 digits), easy enough that SmolLM2-135M is sometimes right, so
  rewards that depend on right answers (AdaPO's adaptive weights and reward gap) have something to measure; the
  reference steps are the left-to-right partial sums of the expression.
"""

from __future__ import annotations

import re

TASKS: dict[str, dict] = {
    "gsm_symbolic": {},
    "chain_sum": {"min_terms": 2, "max_terms": 3, "min_digits": 1, "max_digits": 2},
}


def problems(task: str, size: int, seed: int) -> list[dict]:
    """``size`` reasoning-gym items of ``task`` (question, answer, metadata)."""
    from reasoning_gym import create_dataset

    if task not in TASKS:
        raise SystemExit(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    return list(create_dataset(task, size=size, seed=seed, **TASKS[task]))


def reference_steps(task: str, item: dict) -> str:
    """The worked steps (without the final answer sentence) of one item."""
    if task == "gsm_symbolic":
        return re.sub(r"\n*#### *\S+\s*$", "", item["metadata"]["answer_cot"]).strip()
    tokens = item["metadata"]["expression"].split()  # "4 - 1 - 7" -> ['4', '-', '1', '-', '7']
    total, steps = int(tokens[0]), []
    for op, num in zip(tokens[1::2], tokens[2::2]):
        new = total + int(num) if op == "+" else total - int(num)
        steps.append(f"{total} {op} {num} = {new}.")
        total = new
    return " ".join(steps)


def held_out(task: str, n: int, train: list[tuple[int, int]], seed: int) -> list[dict]:
    """``n`` ``{question, answer}`` problems of ``task`` from ``seed`` whose question is in none of the
    ``(seed, size)`` training sets."""
    seen = {x["question"] for s, size in train for x in problems(task, size, s)}
    rows = [{"question": x["question"], "answer": str(x["answer"])}
            for x in problems(task, 2 * n, seed) if x["question"] not in seen]
    return rows[:n]
