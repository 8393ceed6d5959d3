"""The Cas-SEAT text format: short cascaded prompts and the self-evaluation block (arXiv 2501.05662).

A self-evaluating response is the chain-of-thought answer, then one evaluation block, then the final answer::

    <reasoning> The answer is 12.
    [self-evaluation-start: <short critique> Evaluation: Accept self-evaluation-end] The answer is 12.

``Accept`` keeps the first answer; ``Refine`` replaces it, so the final answer after the block is the revision.
The teacher writes the two parts from two separate short prompts (:func:`cot_prompt`, then :func:`eval_prompt` on the
question and the first response) instead of one long instruction; :func:`compose` joins them and :func:`parse` takes
any response apart again. Malformed text never raises: :func:`parse` returns ``None`` with the reason in
:func:`parse_problem`, so filters can count each kind of failure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

START, END = "[self-evaluation-start:", "self-evaluation-end]"
VERDICTS = ("Accept", "Refine")
Verdict = Literal["Accept", "Refine"]

_ANSWER = re.compile(r"The answer is\s*\$?\s*(-?[\d,]*\.?\d+)", re.IGNORECASE)
_BLOCK = re.compile(r"\[self-evaluation-start:(?P<critique>.*?)Evaluation:\s*(?P<verdict>\w+)\s*self-evaluation-end\]",
                    re.DOTALL)


def cot_prompt(question: str) -> str:
    """Cascade step 1: solve step by step and end with the answer sentence."""
    return (f"Solve the problem step by step. End with 'The answer is N.' where N is a number.\n\n"
            f"Problem: {question}\n\nSolution:")


def eval_prompt(question: str, response: str) -> str:
    """Cascade step 2: judge the first response in a few sentences, then Accept or Refine with a final answer."""
    return (f"Problem: {question}\n\nProposed solution: {response}\n\n"
            f"Check the solution briefly. Then write 'Evaluation: Accept' if it is right or 'Evaluation: Refine' if "
            f"it is wrong, and end with 'The answer is N.'\n\nCheck:")


def self_eval_prompt(question: str) -> str:
    """The student's one prompt (SFT targets and AdaPO rollouts): answer, evaluate, then give the final answer."""
    return (f"Solve the problem step by step and end with 'The answer is N.' Then check your solution inside "
            f"{START} ... Evaluation: Accept|Refine {END} and give the final answer again as 'The answer is N.'\n\n"
            f"Problem: {question}\n\nSolution:")


def extract_answer(text: str) -> str | None:
    """The number of the last 'The answer is N' in ``text`` (commas dropped), or None."""
    found = _ANSWER.findall(text)
    return found[-1].replace(",", "") if found else None


def self_eval_block(critique: str, verdict: Verdict) -> str:
    if verdict not in VERDICTS:
        raise ValueError(f"verdict must be one of {VERDICTS}, got {verdict!r}")
    return f"{START} {critique.strip()} Evaluation: {verdict} {END}"


def compose(response: str, critique: str, verdict: Verdict, final_answer: str) -> str:
    """The full self-evaluating target: first response, evaluation block, final answer sentence."""
    return f"{response.strip()}\n{self_eval_block(critique, verdict)} The answer is {final_answer}."


@dataclass(frozen=True)
class SelfEval:
    """A parsed self-evaluating response."""

    response: str  # the text before the block
    first_answer: str | None  # the number the response ends on
    critique: str
    verdict: Verdict
    final_answer: str  # the number after the block


def parse_problem(text: str) -> str | None:
    """Why ``text`` is not a well-formed self-evaluating response (None when it is)."""
    if text.count(START) != 1 or text.count(END) != 1:
        return "no_block" if START not in text and END not in text else "block_count"
    m = _BLOCK.search(text)
    if m is None:
        return "no_verdict" if "Evaluation:" not in text else "bad_block"
    if m.group("verdict") not in VERDICTS:
        return "bad_verdict"
    if extract_answer(text[m.end():]) is None:
        return "no_final_answer"
    return None


def parse(text: str) -> SelfEval | None:
    """Take a self-evaluating response apart; None when it is malformed (see :func:`parse_problem`)."""
    if parse_problem(text) is not None:
        return None
    m = _BLOCK.search(text)
    response = text[:m.start()].strip()
    return SelfEval(response=response, first_answer=extract_answer(response), critique=m.group("critique").strip(),
                    verdict=m.group("verdict"), final_answer=extract_answer(text[m.end():]))


def verdict_of(eval_text: str) -> Verdict | None:
    """The verdict a teacher's evaluation (cascade step 2) gives, or None when it gives none or both."""
    found = set(re.findall(r"Evaluation:\s*(Accept|Refine)\b", eval_text))
    return found.pop() if len(found) == 1 else None


def answers_match(a: str | None, b: str | None) -> bool:
    """Numeric equality of two answer strings (None never matches)."""
    if a is None or b is None:
        return False
    try:
        return abs(float(a) - float(b)) < 1e-6
    except ValueError:
        return a.strip() == b.strip()
