"""Instance-wise expert fusion for ThinkRec (arXiv 2505.15091).

ThinkRec groups users by their embeddings, trains one LoRA expert per user group next to a general expert, and routes
every request through a gate over the group centroids. This module holds the pieces of that scheme:

* :func:`choose_clusters` picks the number of user groups by silhouette score and returns the group centroids;
* :func:`gate_weights` and :func:`route` turn a user embedding into a routing decision (one group, the general
  expert, or a mixture of group experts);
* :func:`add_mixture`, :class:`MixtureCache` and :func:`save_mixture` build an adapter whose weight delta is exactly the
  gate-weighted sum of the experts' deltas, keep a few of them around, and write one out for per-request serving.
"""

from __future__ import annotations

import hashlib
import math
import shutil
import tempfile
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from tandem.errors import TandemError
from tandem.io import atomic_directory

if TYPE_CHECKING:
    import peft


# --------------------------------------------------------------------------------------------------------- clustering
@dataclass(eq=False)
class Clustering:
    """User groups found by :func:`choose_clusters`.

    ``centroids`` (K, d) are unit-length; ``labels`` (U,) give each user's group; ``silhouette`` maps every tried K to
    its silhouette score on the normalised embeddings.
    """

    k: int
    centroids: np.ndarray
    labels: np.ndarray
    silhouette: dict[int, float]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (arrays as lists, silhouette keys as strings), for :func:`tandem.io.atomic_write_json`."""
        return {
            "k": int(self.k),
            "centroids": self.centroids.tolist(),
            "labels": self.labels.astype(int).tolist(),
            "silhouette": {str(k): float(v) for k, v in self.silhouette.items()},
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Clustering:
        """Inverse of :meth:`to_json`."""
        return cls(
            k=int(obj["k"]),
            centroids=np.asarray(obj["centroids"], dtype=np.float64),
            labels=np.asarray(obj["labels"], dtype=np.int64),
            silhouette={int(k): float(v) for k, v in obj["silhouette"].items()},
        )


def _normalise_rows(x: np.ndarray) -> np.ndarray:
    """Scale each row to unit L2 norm; all-zero rows stay zero."""
    norms = np.linalg.norm(x, axis=-1, keepdims=True)  # (..., 1)
    return x / np.where(norms > 0, norms, 1.0)


def _check_cluster_args(n_users: int, k_min: int, k_max: int) -> int:
    """Validate the K range and return the largest K to try (capped at U-1, silhouette's limit)."""
    if n_users < 3:
        raise TandemError(f"choose_clusters needs at least 3 user embeddings to compare groups, got {n_users}")
    if k_min < 2:
        raise TandemError(f"choose_clusters: k_min must be at least 2 (silhouette needs two groups), got {k_min}")
    if k_min > k_max:
        raise TandemError(f"choose_clusters: k_min ({k_min}) must not exceed k_max ({k_max})")
    top = min(k_max, n_users - 1)
    if k_min > top:
        raise TandemError(f"choose_clusters: k_min ({k_min}) must be below the number of users ({n_users})")
    return top


def choose_clusters(
    emb: np.ndarray, k_min: int = 2, k_max: int = 10, seed: int = 0, sample_size: int = 2000
) -> Clustering:
    """Cluster user embeddings ``emb`` (U, d) on the unit sphere, choosing K in ``[k_min, k_max]`` by silhouette.

    Rows are L2-normalised, so groups reflect direction (taste), not embedding magnitude. Each K is fit with
    mini-batch k-means; the silhouette score is computed on at most ``sample_size`` users (seeded) to bound its
    quadratic cost. The K with the highest score wins (ties go to the smaller K).
    """
    from sklearn.cluster import MiniBatchKMeans
    from sklearn.metrics import silhouette_score

    emb = np.asarray(emb, dtype=np.float64)
    if emb.ndim != 2:
        raise TandemError(f"choose_clusters expects a (users, dim) matrix, got shape {emb.shape}")
    top = _check_cluster_args(emb.shape[0], k_min, k_max)
    x = _normalise_rows(emb)  # (U, d)
    sample = sample_size if x.shape[0] > sample_size else None
    scores: dict[int, float] = {}
    fits: dict[int, Any] = {}
    for k in range(k_min, top + 1):
        km = MiniBatchKMeans(n_clusters=k, random_state=seed, n_init=3).fit(x)
        labels = km.labels_  # (U,)
        if len(np.unique(labels)) < 2:
            scores[k] = -1.0  # degenerate fit: every user in one group
        else:
            scores[k] = float(silhouette_score(x, labels, sample_size=sample, random_state=seed))
        fits[k] = km
    best = max(scores, key=lambda k: (scores[k], -k))
    km = fits[best]
    return Clustering(
        k=best,
        centroids=_normalise_rows(np.asarray(km.cluster_centers_, dtype=np.float64)),  # (K, d)
        labels=np.asarray(km.labels_, dtype=np.int64),  # (U,)
        silhouette=scores,
    )


# ------------------------------------------------------------------------------------------------------------ gating
def gate_weights(user: np.ndarray, centroids: np.ndarray, temperature: float = 0.1) -> np.ndarray:
    """Gate over user groups: ``softmax(cos(user, c_k) / temperature)``, shape (K,).

    A smaller temperature sharpens the distribution. A zero-norm user (no history) gets uniform weights.
    """
    if temperature <= 0:
        raise TandemError(f"gate_weights: temperature must be positive, got {temperature}")
    user = np.asarray(user, dtype=np.float64)  # (d,)
    centroids = np.asarray(centroids, dtype=np.float64)  # (K, d)
    k = centroids.shape[0]
    if not np.linalg.norm(user) > 0:
        return np.full(k, 1.0 / k)
    cos = _normalise_rows(centroids) @ _normalise_rows(user)  # (K,)
    logits = cos / temperature  # (K,)
    z = np.exp(logits - logits.max())  # (K,), max-shifted for stability
    return z / z.sum()


@dataclass(eq=False)
class Route:
    """A routing decision: one group expert, the general expert, or a gate-weighted mixture of group experts."""

    kind: Literal["group", "general", "mix"]
    group: int | None
    weights: np.ndarray


def entropy(weights: np.ndarray) -> float:
    """Shannon entropy ``-sum w log w`` in nats, with ``0 log 0 = 0``."""
    w = np.asarray(weights, dtype=np.float64)  # (K,)
    w = w[w > 0]
    return float(-(w * np.log(w)).sum())


def route(weights: np.ndarray) -> Route:
    """Decide how to serve a request from its gate weights (K,).

    A confident gate (max weight above ``0.5 + 0.6 / K``) sends the request to that group's expert; a gate close to
    uniform (entropy at least 95% of ``log K``) means no group fits, so the general expert serves it; anything in
    between is served by the weighted mixture of group experts. With K = 1 the only group always wins.
    """
    w = np.asarray(weights, dtype=np.float64)  # (K,)
    k = len(w)
    top = int(np.argmax(w))
    if k == 1 or w[top] > 0.5 + 0.6 / k:
        return Route("group", top, w)
    if entropy(w) >= 0.95 * math.log(k):
        return Route("general", None, w)
    return Route("mix", None, w)


def pick_adapter(clustering: Clustering | None, experts: list[str], user: np.ndarray | None, general: str,
                 mixture: Callable[[np.ndarray], str]) -> tuple[str, Route | None]:
    """The adapter name for a user vector (d,): its group's (``experts[k]``), ``general``, or ``mixture(weights)``
    (the engine's exact weighted mixture of the group adapters). Without a clustering or a vector: ``general``."""
    if clustering is None or user is None:
        return general, None
    r = route(gate_weights(user, clustering.centroids))
    if r.kind == "group":
        return experts[r.group], r
    if r.kind == "general":
        return general, r
    return mixture(r.weights), r


# ------------------------------------------------------------------------------------------------------- LoRA mixing
def _check_mixable(model: peft.PeftModel, adapters: list[str], weights: list[float], name: str) -> None:
    """Refuse inputs for which PEFT's ``cat`` combination would not be the exact weighted sum."""
    if len(adapters) != len(weights) or not adapters:
        raise TandemError(
            f"add_mixture: need one weight per adapter, got {len(adapters)} adapters and {len(weights)} weights"
        )
    if name in model.peft_config:
        raise TandemError(f"add_mixture: adapter name {name!r} is already taken; pick a new name")
    for a in adapters:
        if a not in model.peft_config:
            raise TandemError(f"add_mixture: unknown adapter {a!r}; known: {sorted(model.peft_config)}")
        cfg = model.peft_config[a]
        if getattr(cfg, "use_rslora", False) or getattr(cfg, "use_dora", False):
            raise TandemError(f"add_mixture: adapter {a!r} uses rsLoRA or DoRA; the exact mixture needs plain LoRA")


def add_mixture(model: peft.PeftModel, adapters: list[str], weights: list[float], name: str) -> str:
    """Add adapter ``name`` whose delta is exactly ``sum_k w_k * scaling_k * B_k @ A_k`` on every LoRA module.

    Uses PEFT's ``add_weighted_adapter(..., combination_type="cat")``, which stacks ``w_k * scaling_k * A_k`` and
    ``B_k`` along the rank dimension and gives the result ``lora_alpha = r`` (scaling 1), so
    ``B_mix @ A_mix = sum_k w_k * scaling_k * B_k @ A_k`` with no cross terms; the tests check this for adapters of
    different rank and alpha. (``combination_type="linear"`` instead sums A's and B's separately, which adds cross terms
    ``B_i @ A_j``; it is not used.) The mixture's rank is the sum of the experts' ranks. rsLoRA and DoRA adapters are
    refused: for them the mixture's own scaling would not be 1 (rsLoRA) or the magnitude vector is not mixed (DoRA).
    """
    _check_mixable(model, adapters, weights, name)
    model.add_weighted_adapter(list(adapters), [float(w) for w in weights], adapter_name=name, combination_type="cat")
    return name


def _mixture_name(adapters: tuple[str, ...], weights: tuple[float, ...]) -> str:
    """A stable, PEFT-safe adapter name for one (adapters, rounded weights) key."""
    digest = hashlib.sha1(repr((adapters, weights)).encode()).hexdigest()[:12]
    return f"mix_{digest}"


class MixtureCache:
    """A bounded LRU cache of mixture adapters inside one :class:`peft.PeftModel` (ThinkRec, arXiv 2505.15091).

    Weights are rounded to 0.01 before lookup, so near-identical gates share one mixture; the rounded weights are then
    renormalised to sum to 1 and those are the weights the mixture is built with. On a miss the mixture is built with
    :func:`add_mixture`; when more than ``capacity`` mixtures exist the least recently used one is deleted from the
    model (switching the active adapter to the first expert first, if the victim is active).
    """

    def __init__(self, model: peft.PeftModel, capacity: int = 8) -> None:
        if capacity < 1:
            raise TandemError(f"MixtureCache: capacity must be at least 1, got {capacity}")
        self.model = model
        self.capacity = capacity
        self._entries: OrderedDict[tuple, str] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def rounded(weights: list[float] | np.ndarray) -> tuple[float, ...]:
        """Weights rounded to 0.01 and renormalised to sum to 1 (the weights a mixture is actually built with)."""
        r = np.round(np.asarray(weights, dtype=np.float64), 2)  # (K,)
        if not r.sum() > 0:
            raise TandemError(f"MixtureCache: weights {list(weights)} round to a non-positive sum; cannot normalise")
        return tuple(float(x) for x in r / r.sum())

    def get(self, adapters: list[str], weights: list[float] | np.ndarray) -> str:
        """Return the name of the adapter mixing ``adapters`` with (rounded) ``weights``, building it on a miss."""
        w = self.rounded(weights)
        key = (tuple(adapters), w)
        if key in self._entries:
            self._entries.move_to_end(key)
            return self._entries[key]
        name = add_mixture(self.model, list(adapters), list(w), _mixture_name(*key))
        self._entries[key] = name
        while len(self._entries) > self.capacity:
            self._evict(adapters[0])
        return name

    def _evict(self, fallback: str) -> None:
        """Delete the least recently used mixture, never while it is the active adapter."""
        _, victim = self._entries.popitem(last=False)
        if self.model.active_adapter == victim:
            self.model.set_adapter(fallback)
        self.model.delete_adapter(victim)


def save_mixture(model: peft.PeftModel, name: str, folder: str | Path) -> Path:
    """Write adapter ``name`` alone as a plain PEFT adapter folder (config + safetensors), atomically.

    The folder loads with ``PeftModel.from_pretrained(base, folder)`` or as a vLLM per-request LoRA; note its rank is
    the sum of the experts' ranks, so the server's ``max_lora_rank`` must allow it.
    """
    if name not in model.peft_config:
        raise TandemError(f"save_mixture: unknown adapter {name!r}; known: {sorted(model.peft_config)}")
    folder = Path(folder)
    with tempfile.TemporaryDirectory(prefix=".mixture.", dir=folder.parent if folder.parent.exists() else None) as tmp:
        model.save_pretrained(tmp, selected_adapters=[name])
        src = Path(tmp) if name == "default" else Path(tmp) / name  # PEFT puts non-default adapters in a subfolder
        with atomic_directory(folder) as out:
            for item in src.iterdir():
                shutil.move(str(item), out / item.name)
    return folder
