"""ThinkRec's pointwise prompts (arXiv 2505.15091): the history as titles with keyword summaries, one target item, and
a yes/no question; and the completions the student is trained on.

- Without thinking the completion is just ``Answer: Yes`` / ``Answer: No`` (TALLRec's bare label).
- With thinking the instruction asks for a short reasoning first, and the completion is ``<trace>\\nAnswer: Yes``.

In both cases the label is the token right after :data:`ANSWER`, so the yes-probability is read at one place:
p(yes) = softmax over the two logits of " Yes" and " No" after ``Answer:`` (:func:`yes_no_ids`).
"""

from __future__ import annotations

ANSWER = "Answer:"
LABELS = {1: "Yes", 0: "No"}
MAX_HISTORY = 10  # history items shown in a prompt (the newest)

_BARE = "Will the user enjoy the target movie? Reply with one line: Answer: Yes or Answer: No."
_THINK = ("Will the user enjoy the target movie? First explain in two or three sentences how the target relates to "
          "what the user watched, then end with one line: Answer: Yes or Answer: No.")


def item_line(title: str, keywords: list[str]) -> str:
    """``Title (keywords: a, b, c)``, or the title alone when no keyword says more than the title does (small
    keyword models often repeat the title)."""
    keywords = [k for k in keywords if k.lower() not in title.lower()]
    return f"{title} (keywords: {', '.join(keywords)})" if keywords else title


def rec_prompt(history: list[str], target: str, think: bool = False) -> str:
    """The user turn: ``history`` (item lines, oldest first; only the newest :data:`MAX_HISTORY` are shown) and the
    target's item line."""
    shown = history[-MAX_HISTORY:]
    lines = "\n".join(f"{k}. {h}" for k, h in enumerate(shown, 1)) or "(nothing yet)"
    return (f"A user watched these movies, oldest first:\n{lines}\n\nTarget movie: {target}\n\n"
            f"{_THINK if think else _BARE}")


def completion(label: int, trace: str | None = None) -> str:
    """The training target: ``Answer: Yes|No``, after the trace when there is one."""
    answer = f"{ANSWER} {LABELS[int(label)]}"
    return f"{trace.strip()}\n{answer}" if trace else answer


def strip_answer(text: str) -> str:
    """A generated trace without its answer line (and anything after it)."""
    return text.split(ANSWER)[0].strip()


def yes_no_ids(tokenizer) -> tuple[int, int]:
    """Token ids of " Yes" and " No" as they follow ``Answer:`` (each must be one token)."""
    ids = []
    for word in (" Yes", " No"):
        tokens = tokenizer(word, add_special_tokens=False)["input_ids"]
        if len(tokens) != 1:
            raise ValueError(f"{word!r} is {len(tokens)} tokens in this tokenizer; ThinkRec needs one token each")
        ids.append(tokens[0])
    return ids[0], ids[1]
