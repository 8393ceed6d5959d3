"""`tandem train paramgen`: train the hypernetwork for a frozen SRM (DUET, arXiv 2302.04397), fit the Persona
codebook over what it generates, and write the evaluation report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import save_file as save_np

from eval.paramgen import evaluate_paramgen, full_rank_metrics
from llm_cloud.paramgen.checkpoint import load_srm_and_data
from llm_cloud.paramgen.config import ParamGenConfig
from llm_cloud.paramgen.model import ParamGenerator
from llm_cloud.paramgen.positions import case_positions, train_positions, unfitted_cases
from llm_cloud.paramgen.prototypes import fit_codebook
from llm_cloud.paramgen.trainer import fit, generated_user
from srm_device.head import HeadSpec
from srm_device.training import checkpoint as ckpt
from tandem.data.protocols import make_split, split_from_dict
from tandem.io import atomic_output, atomic_write_json


def train_paramgen(srm_dir: str | Path, out: str | Path, cfg: ParamGenConfig, overwrite: bool = False,
                   progress: bool | None = None) -> dict:
    """Train the hypernetwork for a frozen SRM, fit the Persona codebook, and write a report."""
    cfg.validate()
    srm, srm_meta, ds = load_srm_and_data(srm_dir)
    split = make_split(ds, split_from_dict(srm_meta.get("split")))  # the SRM's own protocol: cloud parts only
    spec = HeadSpec(srm.config.hidden_size, cfg.rank)
    torch.manual_seed(cfg.seed)
    item_emb = srm.item_embeddings().detach()  # (n+1, d)
    gen = ParamGenerator(ds.n_items, spec, cfg, item_init=item_emb)
    unfitted = unfitted_cases(split)
    if unfitted is None:
        train, valid_case, test_case = train_positions(srm, split.train, cfg.recent_k), split.valid, split.test
    else:  # nested split: positions the SRM has not fitted; the outer test stays unseen, so report on validation
        train, valid_case, test_case = case_positions(srm, unfitted[0], cfg.recent_k), unfitted[1], unfitted[1]
    valid = case_positions(srm, valid_case, cfg.recent_k)

    def validate(g: ParamGenerator) -> dict[str, float]:
        return full_rank_metrics(generated_user(g, valid.user, valid.recent), item_emb, valid.target)

    meta = {"srm": str(Path(srm_dir).resolve()), "srm_fingerprint": srm_meta.get("data_fingerprint"),
            "n_items": ds.n_items, "hidden_size": spec.hidden_size, "rank": spec.rank,
            "split": split_from_dict(srm_meta.get("split")).to_dict()}
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
    report = evaluate_paramgen(srm, gen, book, test_case, item_emb, cfg.recent_k)
    report.update(best_epoch=state["best_epoch"], epochs_run=state["next_epoch"])
    atomic_write_json(Path(out) / "report.json", report)
    return report




def train_layer_generator(srm_dir: str | Path, out: str | Path, cfg: ParamGenConfig, overwrite: bool = False,
                          progress: bool | None = None) -> dict:
    """Train the multi-layer generator (DUET: the last block's attention output and second feed-forward layer, plus
    the head) for a frozen SASRec, on the SRM's own protocol (cloud parts only under the real-time protocol)."""
    from llm_cloud.paramgen.layers import (
        LayerEditGenerator,
        case_examples,
        edited_states,
        fit_layer_codebook,
        fit_layer_generator,
        prefix_examples,
    )
    from srm_device.adaptation.layer_edit import LayerEditSpec
    from srm_device.scoring import recent_window

    cfg.validate()
    srm, srm_meta, ds = load_srm_and_data(srm_dir)
    split_opts = split_from_dict(srm_meta.get("split"))
    split = make_split(ds, split_opts)
    spec = LayerEditSpec(srm.config.hidden_size, srm.config.inner_size, cfg.rank)
    torch.manual_seed(cfg.seed)
    item_emb = srm.item_embeddings().detach()  # (n+1, d)
    gen = LayerEditGenerator(ds.n_items, spec, cfg, item_init=item_emb)
    unfitted = unfitted_cases(split)
    if unfitted is None:
        train, valid = prefix_examples(split.train, cfg.recent_k), split.valid
    else:  # nested split: the positions the SRM has not fitted
        train, valid = case_examples(unfitted[0], cfg.recent_k), unfitted[1]
    valid_recent = torch.tensor([recent_window(h, cfg.recent_k) for h in valid.histories], dtype=torch.long)
    valid_target = torch.from_numpy(valid.targets)

    def validate(g) -> dict[str, float]:
        with torch.no_grad():
            user = edited_states(srm, g, valid.histories, valid_recent)  # (u, d)
        return full_rank_metrics(user, item_emb, valid_target)

    meta = {"srm": str(Path(srm_dir).resolve()), "srm_fingerprint": srm_meta.get("data_fingerprint"),
            "n_items": ds.n_items, "hidden_size": spec.hidden_size, "rank": spec.rank, "split": split_opts.to_dict()}
    state = fit_layer_generator(srm, gen, train, validate, cfg, out, meta, overwrite=overwrite, progress=progress)
    ckpt.load_weights(gen, Path(out) / "model.safetensors")
    fit_layer_codebook(gen, train, cfg, out)
    return {"best_epoch": state["best_epoch"], "epochs_run": state["next_epoch"], "best_valid": state["best_valid"],
            "positions": "prefixes" if unfitted is None else "unfitted", "train_positions": len(train.targets),
            "n_params": spec.n_params, "full_layer_params": spec.full_layer_params()}
