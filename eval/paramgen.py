"""Train and evaluate the parameter generator against the static SRM on the leave-one-out protocol.

Positions for the hypernetwork are computed once from the frozen SRM: for every training (prefix -> next item) pair,
the SRM's hidden state at the prefix's last item, the prefix's last k items, and the target.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file as load_np
from safetensors.numpy import save_file as save_np

from eval.evaluate import pad_histories
from eval.metrics import metrics_from_ranks, target_ranks
from eval.split import EvalCase, leave_one_out
from eval.srm import load_srm_with_data
from llm_cloud.paramgen.config import ParamGenConfig
from llm_cloud.paramgen.model import ParamGenerator, recent_window
from llm_cloud.paramgen.prototypes import encode, fit_codebook
from llm_cloud.paramgen.trainer import Positions, fit, generated_user
from srm_device.head import HeadSpec, apply_head
from srm_device.models import SequentialRecommender
from srm_device.persona import FLOAT32, Codebook
from srm_device.training import checkpoint as ckpt
from srm_device.training.windows import make_windows
from tandem.errors import TandemError
from tandem.io import atomic_output, atomic_write_json


@torch.no_grad()
def train_positions(srm: SequentialRecommender, train: list[np.ndarray], k: int, stride: int = 10,
                    batch: int = 256) -> Positions:
    x, y = make_windows(train, srm.config.max_len, stride)  # (w, L), (w, L)
    users, recents, targets = [], [], []
    srm.eval()
    for start in range(0, len(x), batch):
        xb = torch.from_numpy(x[start : start + batch])  # (b, L)
        yb = torch.from_numpy(y[start : start + batch])  # (b, L)
        hidden = srm(xb)  # (b, L, d)
        rows, cols = torch.nonzero(yb, as_tuple=True)  # positions that carry a target
        users.append(hidden[rows, cols])  # (m, d)
        targets.append(yb[rows, cols])  # (m,)
        padded = torch.cat([torch.zeros(len(xb), k - 1, dtype=torch.long), xb], dim=1)  # (b, k-1+L)
        idx = cols[:, None] + torch.arange(k)[None]  # (m, k): the k items ending at col
        recents.append(padded[rows[:, None], idx])  # (m, k)
    return Positions(torch.cat(users), torch.cat(recents), torch.cat(targets))


@torch.no_grad()
def case_positions(srm: SequentialRecommender, case: EvalCase, k: int, batch: int = 512) -> Positions:
    users = []
    srm.eval()
    for start in range(0, len(case.targets), batch):
        seq, lengths = pad_histories(case.histories[start : start + batch], srm.config.max_len)
        users.append(srm.sequence_output(seq, lengths))  # (b, d)
    recent = torch.tensor([recent_window(h, k) for h in case.histories], dtype=torch.long)  # (u, k)
    return Positions(torch.cat(users), recent, torch.from_numpy(case.targets))


def _metrics(user: torch.Tensor, item_emb: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    scores = user @ item_emb.T  # (u, n+1)
    scores[:, 0] = -torch.inf
    return metrics_from_ranks(target_ranks(scores, target).numpy())


def load_srm_and_data(srm_dir: str | Path):
    """The frozen SRM, its config and its dataset."""
    srm, meta, ds = load_srm_with_data(srm_dir)
    srm.requires_grad_(False)
    return srm, meta, ds


def train_paramgen(srm_dir: str | Path, out: str | Path, cfg: ParamGenConfig, overwrite: bool = False,
                   progress: bool | None = None) -> dict:
    """Train the hypernetwork for a frozen SRM, fit the Persona codebook, and write a report."""
    cfg.validate()
    srm, srm_meta, ds = load_srm_and_data(srm_dir)
    split = leave_one_out(ds.sequences)
    spec = HeadSpec(srm.config.hidden_size, cfg.rank)
    torch.manual_seed(cfg.seed)
    item_emb = srm.item_embeddings().detach()  # (n+1, d)
    gen = ParamGenerator(ds.n_items, spec, cfg, item_init=item_emb)
    train = train_positions(srm, split.train, cfg.recent_k)
    valid = case_positions(srm, split.valid, cfg.recent_k)

    def validate(g: ParamGenerator) -> dict[str, float]:
        return _metrics(generated_user(g, valid.user, valid.recent), item_emb, valid.target)

    meta = {"srm": str(Path(srm_dir).resolve()), "srm_fingerprint": srm_meta.get("data_fingerprint"),
            "n_items": ds.n_items, "hidden_size": spec.hidden_size, "rank": spec.rank}
    state = fit(gen, item_emb, train, validate, cfg, out, meta, overwrite=overwrite, progress=progress)
    ckpt.load_weights(gen, Path(out) / "model.safetensors")
    gen.eval()

    # Persona codebook over the parameters generated for the users' latest training states
    with torch.no_grad():
        sample = torch.from_numpy(np.random.default_rng(cfg.seed).permutation(len(train.target))[:20000])
        params = gen(train.recent[sample]).numpy()  # (s, p)
    book = fit_codebook(params, cfg.n_prototypes, cfg.edit_dim, cfg.seed)
    with atomic_output(Path(out) / "codebook.safetensors") as tmp:
        save_np({"prototypes": book.prototypes, "basis": book.basis}, str(tmp))
    report = evaluate_paramgen(srm, gen, book, split, item_emb, cfg.recent_k)
    report.update(best_epoch=state["best_epoch"], epochs_run=state["next_epoch"])
    atomic_write_json(Path(out) / "report.json", report)
    return report


@torch.no_grad()
def evaluate_paramgen(srm, gen: ParamGenerator, book: Codebook, split, item_emb: torch.Tensor, k: int) -> dict:
    """Test NDCG/HR for the static SRM, generated parameters, and their prototype+edit reconstruction; bytes."""
    test = case_positions(srm, split.test, k)
    flat = gen(test.recent)  # (u, p)
    ids, coefs = encode(book, flat.numpy())
    recon = torch.from_numpy(book.decode(ids, coefs))  # (u, p)
    spec = gen.spec
    recon_err = float(((recon - flat).norm(dim=1) / flat.norm(dim=1).clamp_min(1e-12)).mean())
    return {
        "test": {
            "static": _metrics(test.user.clone(), item_emb, test.target),
            "generated": _metrics(apply_head(test.user, *gen.split(flat)), item_emb, test.target),
            "persona": _metrics(apply_head(test.user, *gen.split(recon)), item_emb, test.target),
        },
        "persona_relative_error": recon_err,
        "bytes_per_update": {
            "full_head": FLOAT32 * spec.full_params,
            "low_rank_delta": FLOAT32 * spec.n_params,
            "prototype_edit": book.update_bytes(),
            "codebook_once": book.download_bytes(),
        },
    }


def load_paramgen(folder: str | Path) -> tuple[ParamGenerator, Codebook, dict]:
    folder = Path(folder)
    try:
        meta = json.loads((folder / "config.json").read_text())
        cfg = ParamGenConfig(**meta["paramgen_config"])
        arrays = load_np(str(folder / "codebook.safetensors"))
    except (OSError, KeyError, TypeError, json.JSONDecodeError) as exc:
        raise TandemError(f"{folder} is not a complete parameter-generator folder ({exc}); run `tandem train "
                          f"paramgen --srm DIR --out {folder}`") from None
    gen = ParamGenerator(meta["n_items"], HeadSpec(meta["hidden_size"], meta["rank"]), cfg)
    ckpt.load_weights(gen, folder / "model.safetensors")
    return gen.eval(), Codebook(arrays["prototypes"], arrays["basis"]), meta


def load_device_models(srm_dir: str | Path, paramgen_dir: str | Path | None):
    """The device SRM, its dataset, and (optionally) its parameter generator and codebook, checked to belong together.

    Returns (srm, ds, gen | None, book | None, recent_k).
    """
    srm, _, ds = load_srm_and_data(srm_dir)
    if paramgen_dir is None:
        return srm, ds, None, None, 20
    gen, book, meta = load_paramgen(paramgen_dir)
    if meta["n_items"] != srm.n_items or meta["hidden_size"] != srm.config.hidden_size:
        raise TandemError(f"parameter generator {paramgen_dir} was trained for another SRM; train it with "
                          f"`tandem train paramgen --srm {srm_dir}`")
    return srm, ds, gen, book, int(meta["paramgen_config"]["recent_k"])
