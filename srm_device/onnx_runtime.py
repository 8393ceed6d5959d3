"""Run an exported rerank graph (:mod:`srm_device.onnx_export`) with onnxruntime on the CPU, as the device would.

Inference needs only ``onnxruntime`` and ``numpy``; torch is imported because :class:`HeadParams` holds tensors.
A missing, corrupt or foreign file raises :class:`TandemError` with a one-line message that names the file and the fix.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from srm_device.adaptation.layer_edit import LayerEditSpec
from srm_device.head import HeadParams, HeadShapeError, HeadSpec
from srm_device.onnx_export import (
    FORMAT,
    FORMAT_VERSION,
    INPUT_NAMES,
    LAYER_INPUT_NAMES,
    LAYERS_FORMAT,
    META_KEYS,
    OUTPUT_NAME,
)
from srm_device.scoring import clip_history
from tandem.errors import TandemError

_FIX = "re-export it with `tandem export onnx --srm DIR --out FILE.onnx`"


def _parse_metadata(path: Path, raw: dict[str, str]) -> dict:
    missing = [k for k in META_KEYS if k not in raw]
    if missing or raw.get("format") not in (FORMAT, LAYERS_FORMAT):
        raise TandemError(f"{path} is an ONNX model but not a Tandem rerank graph (metadata lacks "
                          f"{', '.join(missing) or 'format=' + FORMAT}); {_FIX}")
    try:
        meta = {"format": raw["format"], "model": raw["model"],
                **{k: int(raw[k]) for k in ("format_version", "hidden_size", "rank", "max_len", "n_items")}}
        if meta["format"] == LAYERS_FORMAT:
            meta.update(inner_size=int(raw["inner_size"]), layers=tuple(raw["layers"].split(",")),
                        n_params=int(raw["n_params"]))
    except (KeyError, ValueError) as exc:
        raise TandemError(f"{path} has damaged metadata ({exc}); {_FIX}") from None
    if meta["format_version"] != FORMAT_VERSION:
        raise TandemError(f"{path} has rerank format version {meta['format_version']}, this Tandem reads "
                          f"{FORMAT_VERSION}; {_FIX}")
    return meta


class OnnxReranker:
    """Scores candidates for one user with an exported SRM rerank graph and optional generated parameters: a head
    edit (:class:`HeadParams`), or for a ``tandem-rerank-layers`` graph the flat multi-layer edits (p,)."""

    def __init__(self, path: str | Path, threads: int = 1) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            problem = "is a folder" if self.path.is_dir() else "does not exist"
            raise TandemError(f"ONNX file {self.path} {problem}; {_FIX}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only; a bad file is reported by the TandemError below
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own (pybind) classes for corrupt or invalid files
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise TandemError(f"{self.path} is not a readable ONNX model ({detail[:200]}); {_FIX}") from None
        self.meta = _parse_metadata(self.path, self.session.get_modelmeta().custom_metadata_map)
        self.edit = "layers" if self.meta["format"] == LAYERS_FORMAT else "head"
        inputs = [i.name for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        want = LAYER_INPUT_NAMES if self.edit == "layers" else INPUT_NAMES
        if inputs != list(want) or outputs != [OUTPUT_NAME]:
            raise TandemError(f"{self.path} has inputs {inputs} and outputs {outputs}, not those of a Tandem rerank "
                              f"graph; {_FIX}")
        self.spec = HeadSpec(self.meta["hidden_size"], self.meta["rank"])
        self.max_len: int = self.meta["max_len"]
        self.n_items: int = self.meta["n_items"]
        if self.edit == "layers":
            self.layer_spec = LayerEditSpec(self.meta["hidden_size"], self.meta["inner_size"], self.meta["rank"],
                                            self.meta["layers"])
            self._zeros = {"edits": np.zeros(self.layer_spec.n_params, dtype=np.float32)}
        else:
            self._zeros = self._head_arrays(self.spec.zeros())

    def _edit_arrays(self, edits) -> dict[str, np.ndarray]:
        flat = torch.as_tensor(np.asarray(edits, dtype=np.float32)).reshape(1, -1)
        try:
            self.layer_spec.check(flat)
        except HeadShapeError as exc:
            raise ValueError(f"{exc} (ONNX file {self.path})") from None
        return {"edits": np.ascontiguousarray(flat[0].numpy())}

    def _head_arrays(self, head: HeadParams) -> dict[str, np.ndarray]:
        try:
            head = head.check(self.spec)
        except HeadShapeError as exc:
            raise ValueError(f"{exc} (ONNX file {self.path})") from None
        return {name: np.ascontiguousarray(value.detach().cpu().numpy(), dtype=np.float32)
                for name, value in (("head_a", head.a), ("head_b", head.b), ("head_bias", head.bias))}

    def _check_ids(self, ids: np.ndarray, what: str) -> None:
        if ids.size and (ids.min() < 1 or ids.max() > self.n_items):
            raise ValueError(f"{what} item ids must be in 1..{self.n_items}, got {ids.min()}..{ids.max()}")

    def scores(self, history: np.ndarray, candidates: np.ndarray, head) -> np.ndarray:
        """Scores (c,) of ``candidates`` for ``history`` (item ids, oldest first; the last max_len are used).

        ``head`` is a :class:`HeadParams` (head graph) or the flat edits (p,) (layers graph); None is the static
        SRM (zero parameters).
        """
        hist = clip_history(history, self.max_len)  # (t,)
        cand = np.ascontiguousarray(np.asarray(candidates, dtype=np.int64).reshape(1, -1))  # (1, c)
        self._check_ids(hist, "history")
        self._check_ids(cand, "candidate")
        feed = {"item_seq": hist[None], "lengths": np.array([hist.size], dtype=np.int64),
                "candidates": cand, **(self._zeros if head is None else
                                       self._edit_arrays(head) if self.edit == "layers" else self._head_arrays(head))}
        return self.session.run([OUTPUT_NAME], feed)[0][0]  # (c,)


def verify_export(model, reranker: OnnxReranker, seed: int = 0, n_candidates: int = 20) -> float:
    """Max abs difference between ``reranker`` and the torch ``model`` (a SequentialRecommender) on random inputs:
    a short and a full-length history, zero and random head parameters."""
    from srm_device.scoring import score_history

    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    d, r = reranker.spec.hidden_size, reranker.spec.rank
    if reranker.edit == "layers":
        return _verify_layers(model, reranker, rng, gen, n_candidates)
    random_head = HeadParams(0.1 * torch.randn(d, r, generator=gen), 0.1 * torch.randn(d, r, generator=gen),
                             0.1 * torch.randn(d, generator=gen))
    worst = 0.0
    for t in sorted({1, max(1, reranker.max_len // 2), reranker.max_len + 3}):
        history = rng.integers(1, reranker.n_items + 1, size=t)
        candidates = rng.integers(1, reranker.n_items + 1, size=n_candidates)
        for head in (None, random_head):
            diff = np.abs(reranker.scores(history, candidates, head) - score_history(model, history, candidates, head))
            worst = max(worst, float(diff.max()))
    return worst


def _verify_layers(model, reranker: OnnxReranker, rng: np.random.Generator, gen: torch.Generator,
                   n_candidates: int) -> float:
    """:func:`verify_export` for a layers graph, against the ``duet`` device method."""
    from srm_device.adaptation import make_method

    spec = reranker.layer_spec
    duet = make_method("duet", model, rank=spec.rank, layers=spec.layers)
    worst = 0.0
    for t in sorted({1, max(1, reranker.max_len // 2), reranker.max_len + 3}):
        history = rng.integers(1, reranker.n_items + 1, size=t)
        candidates = rng.integers(1, reranker.n_items + 1, size=n_candidates)
        kept = [clip_history(history, reranker.max_len).tolist()]
        for edits in (torch.zeros(spec.n_params), 0.1 * torch.randn(spec.n_params, generator=gen)):
            want = duet.scores(kept, edits[None])[0, torch.from_numpy(candidates)].numpy()  # (c,)
            worst = max(worst, float(np.abs(reranker.scores(history, candidates, edits.numpy()) - want).max()))
    return worst
