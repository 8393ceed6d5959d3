"""The `thresholds` stage of `tandem build`: what the server needs besides the models, fitted on validation users.

For each SRM the store holds (the independently trained one and the LSC4Rec collaborative one, arXiv 2502.08667),
with the generated head parameters applied, on the LLM's candidate lists for the validation histories:
- Platt calibration and the `learned` α (:func:`eval.device.fit_fusion`);
- the fusion rule with the best validation NDCG@10;
then the SRM with the better NDCG@10 is kept, and every request policy's threshold is calibrated, for each request
ratio, on lists that lag ``staleness`` items behind the history (the setting the server's cache is in).

The fusion parameters are chosen on the same validation users they are fitted on; `tandem eval collab` reports the
test split, which none of this sees.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from eval.device import (
    RATIOS,
    DeviceEvalConfig,
    build_view,
    candidate_ranks,
    fit_fusion,
    fusion_inputs,
    view_policy_inputs,
)
from eval.metrics import metrics_from_ranks
from llm_cloud.paramgen.checkpoint import load_paramgen
from pipelines.candidate_cache import CandidateCache, EngineOptions, ListEngine
from srm_device.fusion import FUSION_RULES, fuse
from srm_device.policies import POLICIES, make_policy
from srm_device.training.checkpoint import load_checkpoint, load_srm_with_data
from tandem.artifacts import PolicyThreshold, Store, Thresholds
from tandem.data.split import EvalCase, leave_one_out


@dataclass
class CachedLLMSource:
    """The LLM's candidate lists through the store's on-disk candidate cache (shared with the collab stage)."""

    engine: ListEngine
    cache: CandidateCache
    name: str = "llm"

    def topn(self, histories: list[np.ndarray], n: int) -> tuple[np.ndarray, np.ndarray]:
        return self.cache.lists(self.engine, histories, n)


def first_users(case: EvalCase, n: int | None) -> EvalCase:
    if n is None or n >= len(case.targets):
        return case
    return EvalCase(case.users[:n], case.histories[:n], case.targets[:n])


def fit_thresholds(store: Store, cfg, engine: EngineOptions | None = None) -> Thresholds:
    """``cfg``: a :class:`pipelines.build.BuildConfig` (n_candidates, staleness, policy, request_ratio, valid_users);
    ``engine``: where missing candidate lists are made (default: here)."""
    base_srm, _, ds = load_srm_with_data(store.srm)
    valid = first_users(leave_one_out(ds.sequences).valid, cfg.valid_users)
    gen, book, meta = load_paramgen(store.paramgen)
    recent_k = int(meta["paramgen_config"]["recent_k"])
    dcfg = DeviceEvalConfig(n_candidates=cfg.n_candidates, staleness=cfg.staleness, recent_k=recent_k)
    source = CachedLLMSource((engine or EngineOptions()).make(store.llm), CandidateCache(store.collab / "candidates"))

    fits = {}
    for name, srm in (("srm", base_srm), ("collab", load_checkpoint(store.collab_srm)[0])):
        srm.eval()
        view = build_view(valid, srm, source, dcfg, gen, book)
        prm = fit_fusion(view)
        x = fusion_inputs(view.fresh_ids, view.fresh_scores, view.fresh_logits)
        by_rule = {r: metrics_from_ranks(candidate_ranks(fuse(r, x, prm), view.fresh_ids, view.targets))["ndcg@10"]
                   for r in FUSION_RULES}
        rule = max(by_rule, key=by_rule.get)
        fits[name] = (by_rule[rule], rule, prm, view, srm, by_rule)
    chosen = max(fits, key=lambda k: fits[k][0])
    _, rule, prm, view, srm, _ = fits[chosen]

    p_valid = view_policy_inputs(view, srm)
    ratios = sorted(set(RATIOS) | {cfg.request_ratio})
    thresholds = {}
    for policy_name in sorted(POLICIES):
        policy = make_policy(policy_name)
        thresholds[policy_name] = {}
        for ratio in ratios:
            th = policy.calibrate(p_valid, ratio)
            thresholds[policy_name][f"{ratio:g}"] = PolicyThreshold(tau=th.tau, p_tie=th.p_tie, ratio=ratio)
    return Thresholds(
        fusion=rule, srm_platt=(prm.srm.a, prm.srm.b), llm_platt=(prm.llm.a, prm.llm.b), alpha=prm.alpha,
        policy=cfg.policy, request_ratio=cfg.request_ratio, thresholds=thresholds, n_candidates=cfg.n_candidates,
        staleness=cfg.staleness, recent_k=recent_k, srm=chosen,
        valid={"n_users": int(len(valid.targets)), "ndcg@10_by_srm_and_rule": {k: v[5] for k, v in fits.items()},
               "fresh_recall@n": float((view.fresh_ids == view.targets[:, None]).any(1).mean())})
