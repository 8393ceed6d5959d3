"""Device-tier evaluation: static vs generated SRM, fusion rules, and request policies against request ratio.

Setting (LSC4Rec, arXiv 2502.08667). The device holds a cached candidate list that the cloud made ``staleness`` items
ago; since then the user kept interacting. For each test user the device either reranks the stale list with its SRM
and the freshest history, or, when its request policy says so, asks the cloud for a fresh list (costing bytes). Every
list is reranked by the chosen fusion rule. A target that is not in the list counts as a miss.

Everything that is fitted (Platt calibration and α for fusion, the policies' thresholds) is fitted on the validation
targets and applied to the test targets.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from eval.calibration import fit_platt
from eval.candidates import CandidateSource
from eval.metrics import metrics_from_ranks
from eval.selfeval import selfeval_report
from llm_cloud.paramgen.model import ParamGenerator
from llm_cloud.paramgen.prototypes import encode
from srm_device.fusion import FUSION_RULES, FusionInputs, FusionParams, fuse
from srm_device.head import apply_head
from srm_device.models import SequentialRecommender
from srm_device.persona import Codebook
from srm_device.policies import POLICIES, PolicyInputs, make_policy
from srm_device.scoring import candidate_logits, llm_mass, policy_inputs, recent_window, user_vectors
from tandem.data.split import EvalCase
from tandem.protocol import ITEM_ID_BYTES, list_bytes

MISS = 10**9
RATIOS = (0.05, 0.1, 0.2, 0.5, 1.0)


@dataclass
class DeviceEvalConfig:
    n_candidates: int = 100
    staleness: int = 5
    recent_k: int = 20
    ratios: tuple[float, ...] = RATIOS
    fusion: str | None = None  # None: the rule with the best validation NDCG@10
    policies: tuple[str, ...] = field(default_factory=lambda: tuple(sorted(POLICIES)))
    seed: int = 0


@dataclass
class View:
    """Everything the evaluation needs for one split."""

    targets: np.ndarray  # (u,)
    histories: list[np.ndarray]  # u fresh histories
    hist_len: np.ndarray  # (u,)
    recent_k: int
    fresh_ids: np.ndarray  # (u, n)
    fresh_scores: np.ndarray  # (u, n)
    stale_ids: np.ndarray  # (u, n)
    stale_scores: np.ndarray  # (u, n)
    user_static: torch.Tensor  # (u, d)
    user: torch.Tensor  # (u, d) with generated parameters when available
    fresh_logits: np.ndarray  # (u, n) SRM scores (through ``user``) of the fresh list
    stale_logits: np.ndarray  # (u, n) ... and of the stale list


@torch.no_grad()
def build_view(case: EvalCase, srm: SequentialRecommender, source: CandidateSource, cfg: DeviceEvalConfig,
               gen: ParamGenerator | None, book: Codebook | None) -> View:
    user_static = user_vectors(srm, case.histories)  # (u, d)
    user = user_static
    if gen is not None:
        recent = torch.tensor([recent_window(h, cfg.recent_k) for h in case.histories])  # (u, k)
        flat = gen(recent).numpy()  # (u, p) what the cloud generates
        if book is not None:  # what the device actually receives: prototype id + edit
            flat = book.decode(*encode(book, flat))
        a, b, bias = gen.split(torch.from_numpy(np.asarray(flat, dtype=np.float32)))
        user = apply_head(user_static, a, b, bias)  # (u, d)
    stale_hist = [h[: max(1, len(h) - cfg.staleness)] for h in case.histories]
    fresh_ids, fresh_scores = source.topn(case.histories, cfg.n_candidates)
    stale_ids, stale_scores = source.topn(stale_hist, cfg.n_candidates)
    return View(case.targets, case.histories, np.array([len(h) for h in case.histories]), cfg.recent_k, fresh_ids,
                fresh_scores, stale_ids, stale_scores, user_static, user, candidate_logits(srm, user, fresh_ids),
                candidate_logits(srm, user, stale_ids))


def candidate_ranks(scores: np.ndarray, ids: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """0-based rank of each target inside its reranked list; MISS when the list does not hold it."""
    if np.isnan(scores).any():
        raise ValueError("NaN in candidate scores: refusing to rank")
    hit = ids == targets[:, None]  # (u, n)
    found = hit.any(1)
    target_score = np.where(hit, scores, -np.inf).max(1)  # (u,) the target's score, -inf when absent
    ranks = (scores > target_score[:, None]).sum(1)
    return np.where(found, ranks, MISS)


def fusion_inputs(ids: np.ndarray, source_scores: np.ndarray, logits: np.ndarray) -> FusionInputs:
    u, n = ids.shape
    return FusionInputs(np.tile(np.arange(1, n + 1), (u, 1)), source_scores, logits)


def fit_fusion(view: View) -> FusionParams:
    """Platt-calibrate SRM logits and cloud scores on validation candidates, then pick α by validation NDCG@10."""
    logits = view.fresh_logits
    label = view.fresh_ids == view.targets[:, None]
    prm = FusionParams(srm=fit_platt(logits, label), llm=fit_platt(view.fresh_scores, label))
    x = fusion_inputs(view.fresh_ids, view.fresh_scores, logits)
    best = (-1.0, 0.5)
    for alpha in np.linspace(0.0, 1.0, 11):
        prm.alpha = float(alpha)
        ndcg = metrics_from_ranks(candidate_ranks(fuse("learned", x, prm), view.fresh_ids, view.targets))["ndcg@10"]
        best = max(best, (ndcg, float(alpha)))
    prm.alpha = best[1]
    return prm


def view_policy_inputs(view: View, srm: SequentialRecommender) -> PolicyInputs:
    """The request policies' inputs for the stale lists of a view (the scoring path the device and server use)."""
    return policy_inputs(srm, view.user, view.histories, view.stale_ids, view.recent_k, view.stale_scores)


def evaluate_device(srm: SequentialRecommender, source: CandidateSource, valid: EvalCase, test: EvalCase,
                    cfg: DeviceEvalConfig, gen: ParamGenerator | None = None, book: Codebook | None = None) -> dict:
    srm.eval()
    vv = build_view(valid, srm, source, cfg, gen, book)
    tv = build_view(test, srm, source, cfg, gen, book)
    prm = fit_fusion(vv)

    def rule_ranks(view: View, rule: str, stale: bool = False) -> np.ndarray:
        if stale:
            ids, scores, logits = view.stale_ids, view.stale_scores, view.stale_logits
        else:
            ids, scores, logits = view.fresh_ids, view.fresh_scores, view.fresh_logits
        return candidate_ranks(fuse(rule, fusion_inputs(ids, scores, logits), prm), ids, view.targets)

    out: dict = {
        "static": metrics_from_ranks(candidate_ranks(candidate_logits(srm, tv.user_static, tv.fresh_ids), tv.fresh_ids,
                                                     tv.targets)),
        "generated": metrics_from_ranks(candidate_ranks(tv.fresh_logits, tv.fresh_ids, tv.targets))
        if gen is not None else None,
        "fusion": {r: metrics_from_ranks(rule_ranks(tv, r)) for r in FUSION_RULES},
    }
    valid_rules = {r: metrics_from_ranks(rule_ranks(vv, r))["ndcg@10"] for r in FUSION_RULES}
    rule = cfg.fusion or max(valid_rules, key=valid_rules.get)

    fresh_rank = rule_ranks(tv, rule)
    stale_rank = rule_ranks(tv, rule, stale=True)
    up = ITEM_ID_BYTES * np.minimum(tv.hist_len, srm.config.max_len)  # request_bytes, per user
    down = list_bytes(cfg.n_candidates)
    p_valid = view_policy_inputs(vv, srm)
    p_test = view_policy_inputs(tv, srm)
    out["policies"] = {}
    for name in cfg.policies:
        policy = make_policy(name, seed=cfg.seed)
        rows = {}
        for ratio in cfg.ratios:
            ask = policy.decide(p_test, policy.calibrate(p_valid, ratio))
            m = metrics_from_ranks(np.where(ask, fresh_rank, stale_rank))
            rows[f"{ratio:g}"] = {"ndcg@10": m["ndcg@10"], "hr@10": m["hr@10"], "request_ratio": float(ask.mean()),
                                  "bytes_per_user": float((ask * (up + down)).mean())}
        out["policies"][name] = rows
    # the LLM judging its own fresh lists: calibrated on validation, ECE and AUROC on test (eval/selfeval.py)
    out["selfeval"] = selfeval_report(llm_mass(vv.fresh_scores), (vv.fresh_ids == vv.targets[:, None]).any(1),
                                      llm_mass(tv.fresh_scores), (tv.fresh_ids == tv.targets[:, None]).any(1))
    out["meta"] = {
        "candidates": source.name, "n_candidates": cfg.n_candidates, "staleness": cfg.staleness,
        "fusion_used_for_policies": rule, "valid_ndcg@10_by_rule": valid_rules,
        "fusion_params": {"srm_platt": [prm.srm.a, prm.srm.b], "llm_platt": [prm.llm.a, prm.llm.b],
                          "alpha": prm.alpha},
        "stale_only_ndcg@10": metrics_from_ranks(stale_rank)["ndcg@10"],
        "fresh_only_ndcg@10": metrics_from_ranks(fresh_rank)["ndcg@10"],
        "bytes_per_request": {"up_mean": float(up.mean()), "down": down},
        "fresh_recall@n": float((tv.fresh_ids == tv.targets[:, None]).any(1).mean()),
        "stale_recall@n": float((tv.stale_ids == tv.targets[:, None]).any(1).mean()),
        "n_users": int(len(tv.targets)),
    }
    return out
