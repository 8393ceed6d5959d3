"""Export the device SRM's rerank step to ONNX, with the generated parameters as graph inputs.

The graph maps one user's history and a candidate list to scores under a low-rank head edit (see
:mod:`srm_device.head`). Because ``head_a``, ``head_b`` and ``head_bias`` are inputs, not weights, the device plugs in
new parameters from the cloud without re-exporting; zeros give the static SRM.

Inputs (batch of one user; ``t`` in 1..max_len and ``c`` are dynamic):

    item_seq   (1, t) int64, right-padded with 0      lengths (1,) int64
    candidates (1, c) int64                            head_a, head_b (d, r) float32; head_bias (d,) float32
Output:
    scores     (1, c) float32

With ``edit="layers"`` (SASRec only) the graph instead takes the multi-layer DUET edits of
:mod:`srm_device.adaptation.layer_edit` as one input, ``edits (p,) float32`` in :meth:`LayerEditSpec.split`'s order
(the ``duet`` device method's payload row), and its format is ``tandem-rerank-layers``.

The export uses torch's dynamo exporter (``torch.onnx.export(..., dynamo=True)``, needs ``onnxscript``): the legacy
TorchScript exporter cannot translate the fused kernel that nn.TransformerEncoder runs in eval mode (SASRec).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import warnings
from pathlib import Path

import torch
from torch import nn

from srm_device.adaptation.layer_edit import LayerEditSpec, edited_user_states
from srm_device.head import HeadParams
from srm_device.models import SequentialRecommender
from srm_device.scoring import rerank_scores
from tandem.io import atomic_output

INPUT_NAMES = ("item_seq", "lengths", "candidates", "head_a", "head_b", "head_bias")
LAYER_INPUT_NAMES = ("item_seq", "lengths", "candidates", "edits")
OUTPUT_NAME = "scores"
FORMAT = "tandem-rerank"
LAYERS_FORMAT = "tandem-rerank-layers"
EDITS = ("head", "layers")
FORMAT_VERSION = 1
# Keys written to the ONNX metadata_props; the runtime refuses a file that lacks one.
META_KEYS = ("format", "format_version", "model", "hidden_size", "rank", "max_len", "n_items")


class RerankGraph(nn.Module):
    """The exported computation: SRM user state, generated head, dot product with the candidates' embeddings."""

    def __init__(self, model: SequentialRecommender) -> None:
        super().__init__()
        self.model = model

    def forward(self, item_seq: torch.Tensor, lengths: torch.Tensor, candidates: torch.Tensor,
                head_a: torch.Tensor, head_b: torch.Tensor, head_bias: torch.Tensor) -> torch.Tensor:
        """(1, t), (1,), (1, c), (d, r), (d, r), (d,) -> scores (1, c)."""
        return rerank_scores(self.model, item_seq, lengths, candidates, HeadParams(head_a, head_b, head_bias))


class LayerRerankGraph(nn.Module):
    """The exported computation with multi-layer edits: edited SASRec user state, dot product with the candidates."""

    def __init__(self, model: SequentialRecommender, spec: LayerEditSpec) -> None:
        super().__init__()
        self.model, self.spec = model, spec

    def forward(self, item_seq: torch.Tensor, lengths: torch.Tensor, candidates: torch.Tensor,
                edits: torch.Tensor) -> torch.Tensor:
        """(1, t), (1,), (1, c), (p,) -> scores (1, c)."""
        user = edited_user_states(self.model, item_seq, lengths, self.spec.split(edits[None]))  # (1, d)
        cand = self.model.item_embeddings()[candidates]  # (1, c, d)
        return torch.einsum("ud,ucd->uc", user, cand)


def layer_spec(model: SequentialRecommender, rank: int) -> LayerEditSpec:
    """The multi-layer edit spec of a SASRec (the edited layers of :class:`LayerEditSpec`'s default)."""
    return LayerEditSpec(model.config.hidden_size, model.config.inner_size, rank)


def onnx_metadata(model: SequentialRecommender, rank: int, edit: str = "head") -> dict[str, str]:
    """The metadata_props of an exported file (all values are strings, as ONNX requires)."""
    meta = {"format": FORMAT if edit == "head" else LAYERS_FORMAT, "format_version": FORMAT_VERSION,
            "model": model.name, "hidden_size": model.config.hidden_size, "rank": rank,
            "max_len": model.config.max_len, "n_items": model.n_items}
    if edit == "layers":
        spec = layer_spec(model, rank)
        meta.update(inner_size=spec.inner_size, layers=",".join(spec.layers), n_params=spec.n_params)
    return {k: str(v) for k, v in meta.items()}


@contextlib.contextmanager
def _quiet_logger(name: str):
    """Raise a logger to ERROR for the block (the exporter logs a warning per missing optional package)."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _example_inputs(model: SequentialRecommender, rank: int, edit: str = "head") -> tuple[torch.Tensor, ...]:
    """Example inputs of a size that pins no axis to 1 (a dim of 1 would be specialised by the tracer)."""
    d, t, c = model.config.hidden_size, min(3, model.config.max_len), 5
    n_items = model.n_items
    item_seq = (torch.arange(t, dtype=torch.int64) % n_items + 1)[None]  # (1, t)
    lengths = torch.tensor([t], dtype=torch.int64)  # (1,)
    candidates = (torch.arange(c, dtype=torch.int64) % n_items + 1)[None]  # (1, c)
    if edit == "layers":
        return item_seq, lengths, candidates, torch.zeros(layer_spec(model, rank).n_params)
    return item_seq, lengths, candidates, torch.zeros(d, rank), torch.zeros(d, rank), torch.zeros(d)


def export_onnx(model: SequentialRecommender, path: str | Path, rank: int, opset: int | None = None,
                edit: str = "head") -> Path:
    """Write the rerank graph of ``model`` with rank-``rank`` generated parameters (``edit``: the head, or the
    multi-layer edits) to ``path`` (atomically); return the path."""
    import onnx

    if rank < 1:
        raise ValueError(f"edit rank must be >= 1, got {rank}")
    if edit not in EDITS:
        raise ValueError(f"edit must be one of {', '.join(EDITS)}, got {edit!r}")
    if edit == "layers" and not hasattr(model, "encoder"):
        raise ValueError(f"multi-layer edits need a transformer SRM (sasrec), not {model.name}; use --edit head")
    path = Path(path)
    copied = copy.deepcopy(model).eval()
    graph = (RerankGraph(copied) if edit == "head" else LayerRerankGraph(copied, layer_spec(model, rank))).eval()
    names = INPUT_NAMES if edit == "head" else LAYER_INPUT_NAMES
    max_len = model.config.max_len
    seq_len = torch.export.Dim("t", min=1, max=max_len) if max_len > 1 else 1
    n_cand = torch.export.Dim("c", min=1)
    dynamic_shapes = {"item_seq": {1: seq_len}, "lengths": None, "candidates": {1: n_cand},
                      **{name: None for name in names[3:]}}
    with torch.no_grad(), warnings.catch_warnings(), _quiet_logger("torch.onnx"), _quiet_logger("onnxscript"):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(graph, _example_inputs(model, rank, edit), dynamo=True, opset_version=opset,
                                    input_names=list(names), output_names=[OUTPUT_NAME],
                                    dynamic_shapes=dynamic_shapes, external_data=False, verbose=False)
    proto = program.model_proto
    got = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is not None and got != opset:
        raise ValueError(f"the exporter cannot write ONNX opset {opset} for this model (it produced {got}); "
                         f"leave --opset out to use the exporter's default")
    # Drop the intermediate shape annotations: torch.export cannot trace nn.GRU with a symbolic length, so the GRU's
    # output is annotated with the example's t (the ONNX GRU op itself is dynamic). onnxruntime trusts these
    # annotations when it fuses MatMul+Add into Gemm and then fails for any other t; without them it infers shapes.
    del proto.graph.value_info[:]
    for key, value in onnx_metadata(model, rank, edit).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    with atomic_output(path) as tmp:
        onnx.save_model(proto, str(tmp))
    return path
