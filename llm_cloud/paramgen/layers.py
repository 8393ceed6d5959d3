"""The cloud's multi-layer parameter generator (DUET, arXiv 2302.04397) and its training, with the SRM frozen.

    z = MLP(GRU(emb(recent k items)))                      (n, z)   shared user code
    θ_l = z · W_l + c_l     for each edited layer l         one generator per layer, as in DUET

θ_l holds the low-rank pair (A_l, B_l) of layer l (:mod:`srm_device.adaptation.layer_edit`). The A-part of every
generator starts at zero and the B-part small and random (as LoRA initialises A·B), so before training every user
gets the static SRM and gradients still reach both factors (with both at zero, neither would ever move).

Training uses cloud-part positions only: for every training position, the edited SRM must predict the next item,
with cross-entropy over all items. The positions are the SRM's own training prefixes, or, for an SRM trained on a
nested real-time split, the positions it has not fitted (:func:`llm_cloud.paramgen.positions.unfitted_cases`). The
SRM's first blocks are frozen, so their output is computed without gradients; gradients flow through the frozen last
block into the generated edits.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from llm_cloud.paramgen.config import ParamGenConfig
from llm_cloud.paramgen.model import B_INIT_STD, RecentItemCoder
from srm_device.adaptation.layer_edit import LayerEditSpec, edited_user_states, last_block_input
from srm_device.models import SequentialRecommender
from srm_device.persona import Codebook
from srm_device.scoring import pad_histories, recent_window
from srm_device.training.checkpoint import save_weights
from tandem.data.split import EvalCase
from tandem.io import atomic_write_json
from tandem.train_state import check_resume, fit_epochs


class LayerEditGenerator(RecentItemCoder):
    def __init__(self, n_items: int, spec: LayerEditSpec, cfg: ParamGenConfig,
                 item_init: torch.Tensor | None = None) -> None:
        super().__init__(n_items, spec.hidden_size, cfg, item_init)
        self.spec = spec
        shapes = spec.shapes()
        groups: dict[str, list[str]] = {}
        for name in shapes:
            groups.setdefault(name.split(".")[0], []).append(name)
        self.groups = groups
        self.outs = nn.ModuleDict()
        for layer, names in groups.items():
            sizes = [int(np.prod(shapes[n])) for n in names]
            out = nn.Linear(cfg.z_size, sum(sizes))
            nn.init.zeros_(out.weight)
            nn.init.zeros_(out.bias)
            at = 0
            for n, size in zip(names, sizes):
                if n.endswith(".b"):  # B small and random, A zero: the edit starts at zero, both factors learn
                    nn.init.normal_(out.weight[at : at + size], std=B_INIT_STD)
                at += size
            self.outs[layer] = out

    def forward(self, recent: torch.Tensor) -> torch.Tensor:
        """recent (n, k) ids, left-padded with 0, newest last -> flat edits (n, n_params) in the spec's order."""
        z = self.code(recent)  # (n, z)
        return torch.cat([self.outs[layer](z) for layer in self.groups], dim=1)  # (n, n_params)


@dataclass
class PrefixExamples:
    """(history -> next item) training pairs of the generator."""

    histories: list[np.ndarray]  # n × (len,) the history
    recent: torch.Tensor  # (n, k) its newest k items
    targets: torch.Tensor  # (n,)


def case_examples(case: EvalCase, k: int) -> PrefixExamples:
    recent = torch.tensor([recent_window(h, k) for h in case.histories], dtype=torch.long).reshape(-1, k)
    return PrefixExamples(list(case.histories), recent, torch.as_tensor(case.targets, dtype=torch.long))


def prefix_examples(train: list[np.ndarray], k: int) -> PrefixExamples:
    """Every (prefix -> next item) pair of the training sequences."""
    hist = [s[:p] for s in train for p in range(1, len(s))]
    tgt = np.array([s[p] for s in train for p in range(1, len(s))], dtype=np.int64)
    return case_examples(EvalCase(np.zeros(len(hist), dtype=np.int64), hist, tgt), k)


def edited_states(srm: SequentialRecommender, gen: LayerEditGenerator, histories: list, recent: torch.Tensor,
                  batch: int = 1024, transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """(n, d) user states under the edits generated from ``recent`` (n, k), in batches; ``transform`` maps the
    generated flat edits (b, p) to what the device receives (e.g. their Persona encoding, decoded)."""
    out = []
    for start in range(0, len(histories), batch):
        seq, lengths = pad_histories(histories[start : start + batch], srm.config.max_len)  # (b, t), (b,)
        flat = gen(recent[start : start + batch])  # (b, p)
        edits = gen.spec.split(transform(flat) if transform else flat)
        out.append(edited_user_states(srm, seq, lengths, edits))
    return torch.cat(out) if out else torch.zeros(0, srm.config.hidden_size)


def fit_layer_generator(srm: SequentialRecommender, gen: LayerEditGenerator, train: PrefixExamples,
                        validate: Callable[[LayerEditGenerator], dict[str, float]], cfg: ParamGenConfig,
                        out: str | Path, meta: dict, overwrite: bool = False, progress: bool | None = None) -> dict:
    """Train ``gen`` with ``srm`` frozen; best weights in ``out/model.safetensors``; resumable from ``out/state``."""
    cfg.validate()
    out = Path(out)
    meta = {**meta, "paramgen_config": cfg.to_dict(), "edit": "layers", "layers": list(gen.spec.layers),
            "inner_size": gen.spec.inner_size}
    if overwrite and out.exists():
        shutil.rmtree(out)
    if (out / "config.json").exists():
        check_resume(out, json.loads((out / "config.json").read_text()), meta, "paramgen_config",
                     ParamGenConfig.RESUMABLE_CHANGES)
    atomic_write_json(out / "config.json", meta)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    srm.eval().requires_grad_(False)
    item_emb = srm.item_embeddings().detach()[1:]  # (n_items, d); column j is item j+1
    opt = torch.optim.Adam(gen.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    def loss_fn(idx: torch.Tensor) -> torch.Tensor:
        hist = [train.histories[i] for i in idx.tolist()]
        seq, lengths = pad_histories(hist, srm.config.max_len)  # (b, t), (b,)
        with torch.no_grad():
            block_in = last_block_input(srm, seq)  # (b, t, d), frozen
        edits = gen.spec.split(gen(train.recent[idx]))
        user = edited_user_states(srm, seq, lengths, edits, block_input=block_in)  # (b, d)
        return F.cross_entropy(user @ item_emb.T, train.targets[idx] - 1)

    return fit_epochs(gen, opt, loss_fn, len(train.targets), lambda: validate(gen),
                      lambda: save_weights(gen, out / "model.safetensors"), out / "state", epochs=cfg.epochs,
                      patience=cfg.patience, batch_size=cfg.batch_size, seed=cfg.seed, desc="train duet layers",
                      metric="ndcg@10", progress=progress)


def fit_layer_codebook(gen: LayerEditGenerator, train: PrefixExamples, cfg: ParamGenConfig, out: str | Path,
                       sample: int = 20000) -> Codebook:
    """Persona prototypes and edit basis (arXiv 2509.06552) over the multi-layer edits generated for a sample of
    the generator's training positions, saved as ``out/codebook.safetensors``."""
    from safetensors.numpy import save_file as save_np

    from llm_cloud.paramgen.prototypes import fit_codebook
    from tandem.io import atomic_output

    pick = torch.from_numpy(np.random.default_rng(cfg.seed).permutation(len(train.targets))[:sample])
    with torch.no_grad():
        params = gen.eval()(train.recent[pick]).numpy()  # (s, p)
    book = fit_codebook(params, cfg.n_prototypes, cfg.edit_dim, cfg.seed)
    with atomic_output(Path(out) / "codebook.safetensors") as tmp:
        save_np({"prototypes": book.prototypes, "basis": book.basis}, str(tmp))
    return book


def load_layer_generator(folder: str | Path, n_items: int) -> tuple[LayerEditGenerator, Codebook]:
    from safetensors.numpy import load_file as load_np

    from srm_device.training import checkpoint as ckpt

    folder = Path(folder)
    meta = json.loads((folder / "config.json").read_text())
    cfg = ParamGenConfig(**meta["paramgen_config"])
    spec = LayerEditSpec(meta["hidden_size"], meta["inner_size"], meta["rank"], tuple(meta["layers"]))
    gen = LayerEditGenerator(n_items, spec, cfg)
    ckpt.load_weights(gen, folder / "model.safetensors")
    arrays = load_np(str(folder / "codebook.safetensors"))
    return gen.eval(), Codebook(arrays["prototypes"], arrays["basis"])
