"""Measurement on the real-time protocol (:mod:`tandem.data.realtime`): every real-time position predicts its item
from everything before it, and the device holds only what it was sent.

Methods measured here (what the device holds at position t of a user whose cloud part ends at c):

- ``static``: the cloud-trained SRM as deployed, run on the device's fresh history ``s[:t]``;
- ``duet``: generated low-rank edits of the last transformer block's attention output and second feed-forward
  layer plus the head (DUET, arXiv 2302.04397; :mod:`srm_device.adaptation.layer_edit`), requested at every position
  (generated from the newest ``k`` items before t);
- ``duet_head``: the one-layer configuration, a generated low-rank edit of the head only, requested at every
  position;
- ``duet_head_at_cut``: the same generator, with parameters generated once at the cut (from ``s[:c]``) and never
  refreshed: what a device that stops asking gets;
- ``persona``: the ``duet_head`` parameters sent as a Persona prototype id plus edit coefficients (arXiv
  2509.06552), decoded on the device; ``duet_persona``: the same encoding of the ``duet`` edits;
- ``retrain``: the device fine-tunes its own copy of the SRM on its real-time items every few items, with backprop
  (:mod:`srm_device.adaptation.retrain`), the cost the parameter-generating methods avoid.

Per method: full-ranking HR/NDCG@10 as the mean over positions and the mean over users, the pointwise AUC and UAUC
with sampled negatives (as DUET and IntellectReq report them), bytes per parameter update (down) and per request
(up), and the paired bootstrap over users of the NDCG@10 difference from ``static``.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from eval.bootstrap import paired_bootstrap
from eval.metrics import metrics_from_ranks, per_row_metrics, per_user_means, target_ranks, user_mean_metrics
from eval.pointwise import pointwise_report
from srm_device.adaptation.retrain import DeviceRetrainer, RetrainConfig
from srm_device.head import apply_head
from srm_device.persona import FLOAT32, Codebook
from srm_device.scoring import recent_window, user_vectors

ID_BYTES = 4  # an item id sent up, int32
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


@torch.no_grad()
def evaluate_realtime(srm, gen, book: Codebook | None, split, recent_k: int,
                      cfg: RealTimeEvalConfig | None = None, layer_gen=None) -> dict:
    """The report of every method on ``split.test`` (one row per real-time position); ``layer_gen`` is the
    multi-layer generator and its Persona codebook, or None."""
    from llm_cloud.paramgen.prototypes import encode

    cfg = cfg or RealTimeEvalConfig()
    test = split.test
    if len(test.targets) == 0:
        raise ValueError("the real-time split has no test positions; lower --time-fraction or use --cut user-fraction")
    srm.eval()
    item_emb = srm.item_embeddings()  # (n+1, d)
    targets = torch.from_numpy(test.targets)  # (m,)
    rng = np.random.default_rng(cfg.seed)
    negatives = _sample_negatives(test.histories, test.targets, srm.n_items, cfg.negatives, rng)  # (m, n)
    static = user_vectors(srm, test.histories)  # (m, d)
    users_vec: dict[str, torch.Tensor] = {"static": static}
    bytes_per_update: dict[str, dict] = {"static": {"down": 0, "up": 0}}
    if gen is not None:
        cut_of = dict(zip(split.cloud_users.tolist(), split.cut.tolist()))
        recent = torch.tensor([recent_window(h, recent_k) for h in test.histories], dtype=torch.long)  # (m, k)
        at_cut = torch.tensor([recent_window(h[: cut_of[int(u)]], recent_k) for h, u in
                               zip(test.histories, test.users)], dtype=torch.long)  # (m, k)
        flat = gen(recent)  # (m, p)
        users_vec["duet_head"] = apply_head(static, *gen.split(flat))
        users_vec["duet_head_at_cut"] = apply_head(static, *gen.split(gen(at_cut)))
        up = ID_BYTES * recent_k
        bytes_per_update["duet_head"] = {"down": FLOAT32 * gen.spec.n_params, "up": up}
        bytes_per_update["duet_head_at_cut"] = {"down": FLOAT32 * gen.spec.n_params, "up": up, "updates": "once"}
        if book is not None:
            ids, coefs = encode(book, flat.numpy())
            recon = torch.from_numpy(book.decode(ids, coefs))  # (m, p)
            users_vec["persona"] = apply_head(static, *gen.split(recon))
            bytes_per_update["persona"] = {"down": book.update_bytes(), "up": up,
                                           "codebook_once": book.download_bytes()}
    costs: dict[str, dict] = {}
    if layer_gen is not None:
        from llm_cloud.paramgen.layers import edited_states

        layer_gen, layer_book = layer_gen
        k = layer_gen.cfg.recent_k
        recent_l = torch.tensor([recent_window(h, k) for h in test.histories], dtype=torch.long)  # (m, k)
        users_vec["duet"] = edited_states(srm, layer_gen, test.histories, recent_l)  # (m, d)
        full = FLOAT32 * layer_gen.spec.full_layer_params()
        bytes_per_update["duet"] = {"down": FLOAT32 * layer_gen.spec.n_params, "up": ID_BYTES * k,
                                    "full_layers": full}
        costs["duet"] = {"device_ms_p50": _layer_scoring_ms(srm, layer_gen, test)}

        def via_codebook(flat: torch.Tensor) -> torch.Tensor:
            ids, coefs = encode(layer_book, flat.numpy())
            return torch.from_numpy(layer_book.decode(ids, coefs))

        users_vec["duet_persona"] = edited_states(srm, layer_gen, test.histories, recent_l, transform=via_codebook)
        bytes_per_update["duet_persona"] = {"down": layer_book.update_bytes(), "up": ID_BYTES * k,
                                            "full_layers": full, "codebook_once": layer_book.download_bytes()}
        costs["duet_persona"] = costs["duet"]
    if cfg.retrain is not None:
        users_vec["retrain"], costs["retrain"] = _retrain_vectors(srm, split, cfg.retrain)
        bytes_per_update["retrain"] = {"down": 0, "up": 0}
    for name, vec in list(users_vec.items()):
        if name not in ("retrain", "duet", "duet_persona"):
            costs.setdefault(name, {})["device_ms_p50"] = _scoring_ms(srm, test, vec is static, gen, recent_k)
    methods, per_user = {}, {}
    for name, vec in users_vec.items():
        methods[name], per_user[name] = _method_report(vec.clone(), item_emb, targets, test.users, negatives)
        methods[name]["bytes_per_update"] = bytes_per_update[name]
        methods[name].update(costs.get(name, {}))
    vs_static = {}
    for name in methods:
        if name == "static":
            continue
        boot = paired_bootstrap(per_user["static"], per_user[name], cfg.resamples, seed=cfg.seed)
        vs_static[name] = {"delta_ndcg@10": boot["delta"], "ci95": boot["ci"], "excludes_zero": boot["excludes_zero"],
                           "users": boot["users"]}
    return {"methods": methods, "vs_static": vs_static,
            "rows": {"positions": int(len(test.targets)), "users": int(len(np.unique(test.users))),
                     "negatives_per_position": cfg.negatives}}


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
            out[block] = user_vectors(device.model, [test.histories[r] for r in block])
        seconds += device.update_seconds
    ms = np.asarray(seconds) * 1000.0
    return out, {"device_update_ms_p50": float(np.median(ms)) if len(ms) else 0.0,
                 "device_update_ms_p90": float(np.quantile(ms, 0.9)) if len(ms) else 0.0,
                 "device_updates": int(len(ms)), "device_state_mb": state_bytes / 2**20,
                 "retrain": dataclasses.asdict(cfg)}


def _median_ms(score_one, test, rows: int = 200) -> float:
    """Median wall time (ms) of ``score_one(history)`` over a fixed sample of test positions."""
    times = []
    for r in np.random.default_rng(0).choice(len(test.targets), size=min(rows, len(test.targets)), replace=False):
        start = time.perf_counter()
        score_one(test.histories[r])
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000.0)


def _scoring_ms(srm, test, static_only: bool, gen, recent_k: int) -> float:
    """Median device time (ms) to score one position: the SRM's forward pass on the history, plus applying the
    received head parameters when the method has them (their generation runs in the cloud)."""
    from srm_device.head import HeadParams

    head = None
    if not static_only and gen is not None:
        a, b, bias = gen.split(gen(torch.zeros(1, recent_k, dtype=torch.long)))
        head = HeadParams(a[0], b[0], bias[0])
    return _median_ms(lambda h: user_vectors(srm, [h], head), test)


def _layer_scoring_ms(srm, layer_gen, test) -> float:
    """Median device time (ms) to score one position with received multi-layer edits."""
    from srm_device.adaptation.layer_edit import edited_user_states
    from srm_device.scoring import pad_histories

    edits = layer_gen.spec.split(torch.zeros(1, layer_gen.spec.n_params))
    return _median_ms(lambda h: edited_user_states(srm, *pad_histories([h], srm.config.max_len), edits), test)
