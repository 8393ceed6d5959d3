"""Training examples for the generative LM: one causal pass covers every (prefix -> next item) pair.

A user's training sequence ``s`` becomes ``<bos>`` followed by the L+1 code tokens of each item; the LM loss at every
code token is the loss of predicting that item's code from all earlier items, as the SRM's loss does (README,
"Training cost").

Sequences of more than ``max_items + 1`` items are cut into windows of ``max_items + 1`` items (each window starts
again with ``<bos>``) whose ends advance by ``stride`` items (:func:`tandem.windows.window_bounds`, as for the SRM). A
later window takes the loss only on the items that earlier windows did not cover (their labels are -100 elsewhere), so
every item is a target exactly once and has at least ``max_items + 1 - stride`` items of context. The first window
also takes the loss on its first item, predicted from ``<bos>`` alone (a learned popularity prior).
"""

from __future__ import annotations

import numpy as np

from llm_cloud.generative.tokens import SemanticIdCodec
from tandem.windows import window_bounds

IGNORE = -100


def lm_examples(sequences: list[np.ndarray], codec: SemanticIdCodec, max_items: int = 50,
                stride: int = 10) -> dict[str, list[list[int]]]:
    """``{"input_ids": [...], "labels": [...]}`` rows for ``datasets.Dataset.from_dict``."""
    width = codec.width
    inputs, labels = [], []
    for seq in sequences:
        if len(seq) == 0:
            continue
        for start, end, first_target in window_bounds(len(seq), max_items + 1, stride):
            ids = codec.encode_items(seq[start:end])  # (1 + (end-start)*width,)
            lab = list(ids)
            keep_from = 1 + (first_target - start) * width  # tokens before this were targets in an earlier window
            lab[:keep_from] = [IGNORE] * keep_from
            inputs.append(ids)
            labels.append(lab)
    return {"input_ids": inputs, "labels": labels}
