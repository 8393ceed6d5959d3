"""Measure a student's answers and self-evaluation on held-out problems (base, Cas-SEAT-trained, AdaPO-trained).

Per problem the student answers :func:`~alignment.seat.format.self_eval_prompt` greedily. From the text:

- answer accuracy: the first answer (before the evaluation block; the whole text when there is no block) is right;
- final accuracy: the answer after the block (the first answer when the output is malformed) is right;
- malformed rate: outputs :func:`~alignment.seat.format.parse` rejects;
- self-evaluation accuracy: among well-formed outputs, Accept when the first answer is right, Refine when wrong.

A forced verdict makes self-evaluation measurable for any model, including one that never writes the block: after
the student's own response we append ``[self-evaluation-start: Evaluation:`` and read the next-token log-probabilities
of " Accept" and " Refine"; ``p_accept = σ(lp_accept − lp_refine)``. Its AUROC against "the first answer is right"
says how well the model knows when it is right (undefined when every first answer is right or every one wrong).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from alignment.seat.format import START, answers_match, extract_answer, parse, self_eval_prompt
from llm_common.teacher import chat_text


@torch.no_grad()
def forced_p_accept(model, tok, prompt_text: str, response: str) -> float:
    """σ(log p(" Accept") − log p(" Refine")) after ``response`` and a forced
    ``[self-evaluation-start: Evaluation:``."""
    text = f"{prompt_text}{response.strip()}\n{START} Evaluation:"
    ids = tok(text, return_tensors="pt", add_special_tokens=False)["input_ids"]  # (1, L)
    logp = torch.log_softmax(model(input_ids=ids, logits_to_keep=1).logits[0, -1].float(), -1)  # (V,)
    first = [tok(w, add_special_tokens=False)["input_ids"][0] for w in (" Accept", " Refine")]
    return 1.0 / (1.0 + math.exp(-float(logp[first[0]] - logp[first[1]])))


@torch.no_grad()
def evaluate_student(model, tok, problems: list[dict[str, Any]], max_tokens: int = 320,
                     progress: bool = False) -> dict[str, Any]:
    """``problems``: ``{question, answer}`` rows. Returns the metrics above and one row per problem."""
    from sklearn.metrics import roc_auc_score
    from tqdm.auto import tqdm

    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    rows = []
    for prob in tqdm(problems, desc="evaluate", disable=not progress):
        prompt_text = chat_text(tok, self_eval_prompt(prob["question"]))
        enc = tok(prompt_text, return_tensors="pt", add_special_tokens=False)
        out = model.generate(**enc, do_sample=False, max_new_tokens=max_tokens, pad_token_id=pad)  # (1, L + new)
        text = tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        parsed = parse(text)
        response = parsed.response if parsed else text.split(START)[0]
        first = parsed.first_answer if parsed else extract_answer(response)
        final = parsed.final_answer if parsed else first
        gold = str(prob["answer"])
        rows.append({"question": prob["question"], "gold": gold, "output": text, "malformed": parsed is None,
                     "first_right": answers_match(first, gold), "final_right": answers_match(final, gold),
                     "verdict": parsed.verdict if parsed else None,
                     "p_accept": forced_p_accept(model, tok, prompt_text, response)})
    n = len(rows)
    formed = [r for r in rows if not r["malformed"]]
    labels = [r["first_right"] for r in rows]
    auroc = (float(roc_auc_score(labels, [r["p_accept"] for r in rows])) if 0 < sum(labels) < n else None)
    return {
        "n": n,
        "answer_accuracy": sum(labels) / n,
        "final_accuracy": sum(r["final_right"] for r in rows) / n,
        "malformed_rate": 1 - len(formed) / n,
        "self_eval_accuracy": (sum((r["verdict"] == "Accept") == r["first_right"] for r in formed) / len(formed)
                               if formed else None),
        "forced_self_eval_accuracy": sum((r["p_accept"] > 0.5) == r["first_right"] for r in rows) / n,
        "forced_auroc": auroc,
        "rows": rows,
    }
