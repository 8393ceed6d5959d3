"""Evaluate a generative recommender on the leave-one-out protocol from its top-N lists.

The rank of the target is its position in the generated list (0 = first); a target the beam search did not generate
is a miss (rank 10**9), so HR/NDCG/MRR@K for K <= N are exactly those of full ranking by sequence log-probability.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from eval.metrics import metrics_from_ranks
from eval.srm import EvalReport
from tandem.data.options import DatasetOptions, load_dataset
from tandem.data.split import EvalCase, get_case, leave_one_out
from tandem.errors import TandemError

MISS = 10**9


def ranks_from_lists(lists: list[np.ndarray], targets: np.ndarray) -> np.ndarray:
    """0-based rank of each target in its list (u,); MISS when absent."""
    ranks = np.full(len(targets), MISS, dtype=np.int64)
    for u, (items, target) in enumerate(zip(lists, targets)):
        hit = np.flatnonzero(items == target)
        if hit.size:
            ranks[u] = int(hit[0])
    return ranks


def evaluate_llm_checkpoint(checkpoint: str | Path, split_name: str = "test", n: int = 100,
                            batch_size: int = 8, backend: str = "transformers",
                            max_users: int | None = None) -> EvalReport:
    """Generate the top-``n`` list of every user of ``split_name`` (or of the first ``max_users``, a stated subset)
    and score it (same JSON as `tandem eval srm`)."""
    from llm_cloud.backends import load_backend

    options = {"batch_size": batch_size, "progress": True} if backend == "transformers" else {}
    engine = load_backend(backend, checkpoint, **options)
    try:
        meta = engine.artifact.meta
        ds = load_dataset(DatasetOptions(**meta["dataset"]))
        if meta.get("data_fingerprint") and meta["data_fingerprint"] != ds.fingerprint():
            raise TandemError(f"checkpoint {checkpoint} was trained on other interactions (fingerprint "
                              f"{meta['data_fingerprint']} != {ds.fingerprint()}); evaluate it on the data it was "
                              f"trained on")
        case = get_case(leave_one_out(ds.sequences), split_name)
        if max_users is not None:
            if max_users < 1:
                raise TandemError(f"--max-users must be >= 1, got {max_users}")
            case = EvalCase(case.users[:max_users], case.histories[:max_users], case.targets[:max_users])
        cands = engine.beam_candidates(case.histories, n=n)
    finally:
        engine.close()
    ranks = ranks_from_lists([c.items for c in cands], case.targets)
    return EvalReport(dataset=ds.name, model=f"llm-{engine.artifact.profile}", split=split_name,
                      metrics=metrics_from_ranks(ranks), n_users=len(case.targets), mask_history=False,
                      n_rows=len(case.targets), metrics_by_user=metrics_from_ranks(ranks))
