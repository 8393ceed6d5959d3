"""Evaluation of the parameter generator against the static SRM on the leave-one-out protocol: NDCG/HR of the
static SRM, of the generated head (DUET, arXiv 2302.04397) and of its Persona prototype + edit reconstruction, and
the bytes of each kind of update."""

from __future__ import annotations

import torch

from eval.metrics import metrics_from_ranks, target_ranks
from llm_cloud.paramgen.model import ParamGenerator
from llm_cloud.paramgen.positions import case_positions
from llm_cloud.paramgen.prototypes import encode
from srm_device.head import apply_head
from srm_device.persona import FLOAT32, Codebook
from tandem.data.split import EvalCase


def full_rank_metrics(user: torch.Tensor, item_emb: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    scores = user @ item_emb.T  # (u, n+1)
    scores[:, 0] = -torch.inf
    return metrics_from_ranks(target_ranks(scores, target).numpy())


@torch.no_grad()
def evaluate_paramgen(srm, gen: ParamGenerator, book: Codebook, case: EvalCase, item_emb: torch.Tensor,
                      k: int) -> dict:
    """NDCG/HR on ``case`` (the split's test rows) for the static SRM, generated parameters, and their
    prototype+edit reconstruction; bytes."""
    test = case_positions(srm, case, k)
    flat = gen(test.recent)  # (u, p)
    ids, coefs = encode(book, flat.numpy())
    recon = torch.from_numpy(book.decode(ids, coefs))  # (u, p)
    spec = gen.spec
    recon_err = float(((recon - flat).norm(dim=1) / flat.norm(dim=1).clamp_min(1e-12)).mean())
    return {
        "test": {
            "static": full_rank_metrics(test.user.clone(), item_emb, test.target),
            "generated": full_rank_metrics(apply_head(test.user, *gen.split(flat)), item_emb, test.target),
            "persona": full_rank_metrics(apply_head(test.user, *gen.split(recon)), item_emb, test.target),
        },
        "persona_relative_error": recon_err,
        "bytes_per_update": {
            "full_head": FLOAT32 * spec.full_params,
            "low_rank_delta": FLOAT32 * spec.n_params,
            "prototype_edit": book.update_bytes(),
            "codebook_once": book.download_bytes(),
        },
    }


