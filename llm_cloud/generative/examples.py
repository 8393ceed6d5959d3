"""Training examples for the generative LM: one causal pass covers every (prefix -> next item) pair.

A user's training sequence ``s`` becomes the format's prefix (``<bos>`` for the tiny profile) followed by each item's
tokens (:class:`~llm_cloud.generative.prompts.PromptFormat`); the LM loss at every code token is the loss of
predicting that item's code from all earlier items, as the SRM's loss does (README, "Training cost").

Sequences of more than ``max_items + 1`` items are cut into windows of ``max_items + 1`` items (each window starts
again with the prefix) whose ends advance by ``stride`` items (:func:`tandem.windows.window_bounds`, as for the SRM).
A later window takes the loss only on the items that earlier windows did not cover (their labels are -100 elsewhere),
so every item is a target exactly once and has at least ``max_items + 1 - stride`` items of context. The first window
also takes the loss on its first item, predicted from the prefix alone (a learned popularity prior).
"""

from __future__ import annotations

import numpy as np

from llm_cloud.generative.prompts import IGNORE, PromptFormat
from tandem.windows import window_bounds

__all__ = ["IGNORE", "lm_examples"]


def lm_examples(sequences: list[np.ndarray], fmt: PromptFormat, max_items: int = 50,
                stride: int = 10) -> dict[str, list[list[int]]]:
    """``{"input_ids": [...], "labels": [...]}`` rows for ``datasets.Dataset.from_dict``."""
    inputs, labels = [], []
    for seq in sequences:
        if len(seq) == 0:
            continue
        for start, end, first_target in window_bounds(len(seq), max_items + 1, stride):
            ids, lab = fmt.example(seq[start:end], first_target - start)
            inputs.append(ids)
            labels.append(lab)
    return {"input_ids": inputs, "labels": labels}
