"""Measurement on the real-time protocol (:mod:`tandem.data.realtime`): every real-time position predicts its item
from everything before it, and the device holds only what it was sent.

Methods measured here, each a device method of :mod:`srm_device.adaptation` (what the device holds at position t of
a user whose cloud part ends at c):

- ``static``: the cloud-trained SRM as deployed, run on the device's fresh history ``s[:t]``;
- ``duet``: generated low-rank edits of the last transformer block's attention output and second feed-forward
  layer plus the head (DUET, arXiv 2302.04397; :mod:`srm_device.adaptation.layer_edit`), requested at every position
  (generated from the newest ``k`` items before t);
- ``duet_head``: the one-layer configuration, a generated low-rank edit of the head only, requested at every
  position;
- ``duet_head_at_cut``: the same generator, with parameters generated once at the cut (from ``s[:c]``) and never
  refreshed: what a device that stops asking gets;
- ``persona``: the ``duet`` edits sent as a Persona prototype id plus edit coefficients (arXiv 2509.06552),
  decoded on the device; ``persona_head``: the same encoding of the ``duet_head`` parameters;
- ``retrain``: the device fine-tunes its own copy of the SRM on its real-time items every few items, with backprop
  (:mod:`srm_device.adaptation.retrain`), the cost the parameter-generating methods avoid;
- ``*_nested``: the same methods with cloud models trained on a nested split: the SRM on an older cloud part, the
  generators on the cloud-part positions that SRM has not fitted (the situation they meet on the device).

Per method: full-ranking HR/NDCG@10 as the mean over positions and the mean over users, the pointwise AUC and UAUC
with sampled negatives (as DUET and IntellectReq report them), bytes per parameter update (down) and per request
(up), and the paired bootstrap over users of the NDCG@10 difference from ``static``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from eval.bootstrap import paired_bootstrap
from eval.metrics import metrics_from_ranks, per_row_metrics, per_user_means, target_ranks, user_mean_metrics
from eval.pointwise import pointwise_report
from srm_device.adaptation import make_method
from srm_device.adaptation.retrain import DeviceRetrainer, RetrainConfig
from srm_device.persona import FLOAT32, Codebook
from srm_device.scoring import recent_window
from tandem.protocol import ITEM_ID_BYTES

BATCH = 4096  # rows scored at once


@dataclass
class RealTimeEvalConfig:
    negatives: int = field(default=20, metadata={"help": "sampled negatives per position for AUC/UAUC"})
    resamples: int = field(default=1000, metadata={"help": "paired-bootstrap resamples over users"})
    seed: int = field(default=0, metadata={"help": "seed of the negative sampling and the bootstrap"})
    retrain: RetrainConfig | None = None  # None: no on-device retraining baseline


def _sample_negatives(histories: list[np.ndarray], targets: np.ndarray, n_items: int, n: int,
                      rng: np.random.Generator) -> np.ndarray:
    """(m, n) item ids drawn uniformly from the items a row's user has not seen up to and including its target."""
    out = np.empty((len(targets), n), dtype=np.int64)
    for row, (h, t) in enumerate(zip(histories, targets)):
        seen = set(h.tolist()) | {int(t)}
        picks: list[int] = []
        while len(picks) < n:
            for c in rng.integers(1, n_items + 1, size=2 * n):
                if int(c) not in seen:
                    picks.append(int(c))
                    if len(picks) == n:
                        break
        out[row] = picks
    return out


def _method_report(user: torch.Tensor, item_emb: torch.Tensor, targets: torch.Tensor, users: np.ndarray,
                   negatives: np.ndarray) -> tuple[dict, np.ndarray]:
    """Metrics of one method from its user vectors (m, d); also its per-user NDCG@10 (u,)."""
    ranks, sampled = [], []
    for start in range(0, len(targets), BATCH):
        scores = user[start : start + BATCH] @ item_emb.T  # (b, n+1)
        scores[:, 0] = -torch.inf
        tgt = targets[start : start + BATCH]  # (b,)
        ranks.append(target_ranks(scores, tgt))
        neg = torch.from_numpy(negatives[start : start + BATCH])  # (b, k)
        sampled.append(torch.cat([scores.gather(1, tgt[:, None]), scores.gather(1, neg)], dim=1))  # (b, 1+k)
    ranks = torch.cat(ranks).numpy()  # (m,)
    k = negatives.shape[1]
    point = pointwise_report(np.repeat(users, k + 1).tolist(),
                             np.tile(np.r_[1, np.zeros(k, dtype=int)], len(users)).tolist(),
                             torch.cat(sampled).reshape(-1).numpy())
    by_user_ndcg = per_user_means(users, per_row_metrics(ranks)["ndcg@10"])
    report = {**metrics_from_ranks(ranks), "by_user": user_mean_metrics(users, ranks), "auc": point["auc"],
              "uauc": point["uauc"]}
    return report, by_user_ndcg


@dataclass
class CloudModels:
    """What the cloud trained for the device: its SRM, the head generator with its Persona codebook, and the
    multi-layer generator with its codebook (either generator may be absent)."""

    srm: object
    gen: object | None = None
    book: Codebook | None = None
    recent_k: int = 20
    layer_gen: tuple | None = None  # (LayerEditGenerator, Codebook)


@torch.no_grad()
def evaluate_realtime(models: CloudModels, split, cfg: RealTimeEvalConfig | None = None,
                      nested: CloudModels | None = None) -> dict:
    """The report of every method on ``split.test`` (one row per real-time position).

    ``nested`` are cloud models trained on a nested split (an older cloud part; the generators on the positions that
    SRM has not fitted); their methods are reported with the suffix ``_nested``, all against the same ``static``."""
    cfg = cfg or RealTimeEvalConfig()
    test = split.test
    if len(test.targets) == 0:
        raise ValueError("the real-time split has no test positions; lower --time-fraction or use --cut user-fraction")
    targets = torch.from_numpy(test.targets)  # (m,)
    rng = np.random.default_rng(cfg.seed)
    negatives = _sample_negatives(test.histories, test.targets, models.srm.n_items, cfg.negatives, rng)  # (m, n)
    vectors, bytes_per_update, costs = _method_vectors(models, split)
    if cfg.retrain is not None:
        user, costs["retrain"] = _retrain_vectors(models.srm, split, cfg.retrain)
        vectors["retrain"] = (user, vectors["static"][1])
        bytes_per_update["retrain"] = {"down": 0, "up": 0}
    if nested is not None:
        more = _method_vectors(nested, split)
        for table, extra in zip((vectors, bytes_per_update, costs), more):
            table.update({f"{name}_nested": value for name, value in extra.items()})
    methods, per_user = {}, {}
    for name, (vec, item_emb) in vectors.items():
        methods[name], per_user[name] = _method_report(vec.clone(), item_emb, targets, test.users, negatives)
        methods[name]["bytes_per_update"] = bytes_per_update[name]
        methods[name].update(costs.get(name, {}))
    def versus(base: str, name: str) -> dict:
        boot = paired_bootstrap(per_user[base], per_user[name], cfg.resamples, seed=cfg.seed)
        return {"delta_ndcg@10": boot["delta"], "ci95": boot["ci"], "excludes_zero": boot["excludes_zero"],
                "users": boot["users"]}

    vs_static = {name: versus("static", name) for name in methods if name != "static"}
    out = {"methods": methods, "vs_static": vs_static}
    if nested is not None:  # what the generators add to the SRM they were trained with
        out["vs_static_nested"] = {name: versus("static_nested", name) for name in methods
                                   if name.endswith("_nested") and name != "static_nested"}
    return {**out,
            "rows": {"positions": int(len(test.targets)), "users": int(len(np.unique(test.users))),
                     "negatives_per_position": cfg.negatives}}


def _method_vectors(models: CloudModels, split) -> tuple[dict, dict, dict]:
    """Per method, the user vectors (m, d) of every test row with the item table they score against, the bytes
    per update, and the device time to score one position with what it received."""
    from llm_cloud.paramgen.prototypes import encode

    srm, gen, test = models.srm, models.gen, split.test
    srm.eval()
    item_emb = srm.item_embeddings()  # (n+1, d)
    plan: list[tuple[str, object, Callable, dict]] = [("static", make_method("static", srm), lambda rows: None, {})]
    if gen is not None:
        k = models.recent_k
        cut_of = dict(zip(split.cloud_users.tolist(), split.cut.tolist()))
        recent = _recent(test.histories, k)  # (m, k)
        at_cut = _recent([h[: cut_of[int(u)]] for h, u in zip(test.histories, test.users)], k)  # (m, k)
        head = make_method("duet_head", srm, rank=gen.spec.rank)
        sent = {"up": ITEM_ID_BYTES * k, "full_layers": FLOAT32 * gen.spec.full_params}
        plan += [("duet_head", head, lambda rows: gen(recent[rows]), sent),
                 ("duet_head_at_cut", head, lambda rows: gen(at_cut[rows]), {**sent, "updates": "once"})]
        if models.book is not None:
            book = models.book
            plan.append(("persona_head", make_method("persona_head", srm, codebook=book, rank=gen.spec.rank),
                         lambda rows: encode(book, gen(recent[rows]).numpy()),
                         {**sent, "codebook_once": book.download_bytes()}))
    if models.layer_gen is not None:
        layer_gen, layer_book = models.layer_gen
        spec = layer_gen.spec
        recent_l = _recent(test.histories, layer_gen.cfg.recent_k)  # (m, k)
        sent = {"up": ITEM_ID_BYTES * layer_gen.cfg.recent_k, "full_layers": FLOAT32 * spec.full_layer_params()}
        options = {"rank": spec.rank, "layers": spec.layers}
        plan += [("duet", make_method("duet", srm, **options), lambda rows: layer_gen(recent_l[rows]), sent),
                 ("persona", make_method("persona", srm, codebook=layer_book, **options),
                  lambda rows: encode(layer_book, layer_gen(recent_l[rows]).numpy()),
                  {**sent, "codebook_once": layer_book.download_bytes()})]
    vectors, bytes_per_update, costs = {}, {}, {}
    for name, method, payload, sent in plan:
        rows = np.arange(len(test.targets))
        vectors[name] = (torch.cat([method.user_states([test.histories[r] for r in part], payload(part))
                                    for part in np.array_split(rows, max(1, -(-len(rows) // BATCH)))]), item_emb)
        bytes_per_update[name] = {"down": method.payload_bytes(), "up": 0, **sent}
        costs[name] = {"device_ms_p50": _median_ms(method, payload, test)}
    return vectors, bytes_per_update, costs


def _recent(histories, k: int) -> torch.Tensor:
    return torch.tensor([recent_window(h, k) for h in histories], dtype=torch.long).reshape(len(histories), k)


def _retrain_vectors(srm, split, cfg: RetrainConfig) -> tuple[torch.Tensor, dict]:
    """User vectors (m, d) of every test row under on-device retraining, and its device cost.

    Rows of one user are contiguous and in time order; each user's device starts from the cloud SRM and fine-tunes
    after every ``cfg.every`` real-time items it has seen."""
    test = split.test
    cut_of = dict(zip(split.cloud_users.tolist(), split.cut.tolist()))
    out = torch.empty(len(test.targets), srm.config.hidden_size)  # (m, d)
    seconds: list[float] = []
    state_bytes = 0
    bounds = np.flatnonzero(np.diff(test.users)) + 1
    for rows in np.split(np.arange(len(test.targets)), bounds):
        c = cut_of[int(test.users[rows[0]])]
        seq = np.append(test.histories[rows[-1]], test.targets[rows[-1]])  # the user's whole sequence
        device = DeviceRetrainer(srm, cfg)
        state_bytes = device.state_bytes
        for start in range(0, len(rows), cfg.every):
            device.update(seq, c, c + start)  # fine-tune on the real-time items before this block
            block = rows[start : start + cfg.every]
            out[block] = device.user_states([test.histories[r] for r in block])
        seconds += device.update_seconds
    ms = np.asarray(seconds) * 1000.0
    return out, {"device_update_ms_p50": float(np.median(ms)) if len(ms) else 0.0,
                 "device_update_ms_p90": float(np.quantile(ms, 0.9)) if len(ms) else 0.0,
                 "device_updates": int(len(ms)), "device_state_mb": state_bytes / 2**20,
                 "retrain": dataclasses.asdict(cfg)}


def _median_ms(method, payload: Callable, test, rows: int = 200) -> float:
    """Median device time (ms) for ``method`` to compute one position's user state from its history and what the
    cloud sent for it (the generation itself runs in the cloud), over a fixed sample of test positions."""
    times = []
    for r in np.random.default_rng(0).choice(len(test.targets), size=min(rows, len(test.targets)), replace=False):
        received = payload(np.array([r]))
        start = time.perf_counter()
        method.user_states([test.histories[r]], received)
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000.0)
