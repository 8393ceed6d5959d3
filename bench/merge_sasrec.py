"""CKI on recommendation models (arXiv 2501.07596): splice two SASRec checkpoints and compare with each parent.

Parents are two `tandem train srm` runs on the same data (e.g. different seeds). The merges: a plain average
(`linear`), CKI with the data-free local compatibility, and CKI with the local compatibility learned for a few steps
on training windows (calibration data: the SASRec training loss, parents frozen). The better parent (by validation
NDCG@10) is the anchor. Everything is measured on the same run, validation and test, full ranking:

    OMP_NUM_THREADS=1 python -m bench.merge_sasrec runs/sasrec runs/sasrec_s7 [--steps 50] [--json FILE]

``--halves COMMON`` makes the parents instead: two copies of the trained checkpoint COMMON fine-tuned for
``--ft-epochs`` on two disjoint random halves of the users (best epoch by validation NDCG@10 over all users), the
setting of models that share a basin and hold different knowledge:

    OMP_NUM_THREADS=1 python -m bench.merge_sasrec --halves runs/sasrec --work runs/merge_sasrec_halves
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import torch

from eval.evaluate import evaluate_case
from merging.methods import make_method
from merging.methods.cki import LocalCompat, fit_local_compat
from merging.state_dict import merge_state_dicts
from srm_device.training.checkpoint import load_srm_with_data
from srm_device.training.windows import make_windows
from tandem.data.split import leave_one_out


class TrainingLoss(torch.nn.Module):
    """forward = the SRM's training loss, so torch.func.functional_call can evaluate spliced parameters."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.m = model

    def forward(self, seq: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        return self.m.calculate_loss(seq, tgt)


def learned_compat(child, sds: list[dict], train: list[np.ndarray], steps: int, batch: int, seed: int) -> LocalCompat:
    x, y = make_windows(train, child.config.max_len, 10)  # (w, L), (w, L)
    rng = np.random.default_rng(seed)
    keys = [k for k in sds[0] if sds[0][k].is_floating_point()]
    wrapped = TrainingLoss(child)

    def loss_fn(spliced: list[torch.Tensor]) -> torch.Tensor:
        idx = rng.choice(len(x), size=min(batch, len(x)), replace=False)
        xb, yb = torch.from_numpy(x[idx]), torch.from_numpy(y[idx])  # (b, L), (b, L)
        return torch.func.functional_call(wrapped, {f"m.{k}": v for k, v in zip(keys, spliced)}, (xb, yb))

    child.train()
    compat = fit_local_compat(loss_fn, [(sds[0][k], sds[1][k]) for k in keys], steps=steps, lr=0.05)
    child.eval()
    return compat


def branch_on_halves(common: Path, work: Path, epochs: int, lr: float, seed: int) -> list[str]:
    """Fine-tune two copies of ``common`` on disjoint random halves of the users; returns the two folders
    (resumable: ``fit`` continues a branch whose folder exists)."""
    from eval.srm import make_validator
    from srm_device.training.config import TrainConfig
    from srm_device.training.trainer import fit

    model, meta, ds = load_srm_with_data(common)
    split = leave_one_out(ds.sequences)
    users = np.random.default_rng(seed).permutation(len(split.train))
    halves = np.array_split(users, 2)
    base_cfg = meta["train_config"]
    folders = []
    for k, (tag, idx) in enumerate(zip("AB", halves)):
        out = work / f"half_{tag}"
        cfg = TrainConfig(epochs=epochs, patience=epochs, batch_size=base_cfg["batch_size"], lr=lr,
                          window_stride=base_cfg["window_stride"], seed=seed + k, threads=1)
        branch = copy.deepcopy(model)
        branch_meta = {key: v for key, v in meta.items() if key != "train_config"}
        branch_meta.update(common=str(common), half=tag, half_users=len(idx), half_seed=seed)
        res = fit(branch, branch_meta, [split.train[u] for u in idx], make_validator(split, model.config.max_len),
                  cfg, out, progress=False)
        print(f"branch {tag}: {len(idx)} users, best epoch {res.best_epoch} valid NDCG@10 "
              f"{res.best_valid['ndcg@10']:.4f} ({res.train_seconds:.0f} s)", flush=True)
        folders.append(str(out))
    return folders


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("parents", nargs="*", help="two SRM checkpoint folders trained on the same data")
    p.add_argument("--halves", type=Path, metavar="COMMON",
                   help="make the parents: fine-tune this checkpoint on two disjoint halves of the users")
    p.add_argument("--work", type=Path, default=Path("runs/merge_sasrec_halves"),
                   help="where --halves writes its two branches (default %(default)s)")
    p.add_argument("--ft-epochs", type=int, default=5, help="--halves: fine-tuning epochs (default %(default)s)")
    p.add_argument("--ft-lr", type=float, default=5e-4,
                   help="--halves: fine-tuning learning rate (default %(default)s)")
    p.add_argument("--steps", type=int, default=50, help="steps to learn the local compatibility (default 50)")
    p.add_argument("--batch", type=int, default=256, help="training windows per step (default 256)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="write the results as JSON")
    args = p.parse_args()
    if bool(args.halves) == (len(args.parents) == 2) or (args.parents and len(args.parents) != 2):
        p.error("pass two parent checkpoints, or --halves COMMON (not both)")
    torch.manual_seed(args.seed)
    if args.halves:
        args.parents = branch_on_halves(args.halves, args.work, args.ft_epochs, args.ft_lr, args.seed)

    loaded = [load_srm_with_data(folder) for folder in args.parents]
    if loaded[0][2].fingerprint() != loaded[1][2].fingerprint():
        raise SystemExit("the two checkpoints were trained on different data")
    split = leave_one_out(loaded[0][2].sequences)
    max_len = loaded[0][0].config.max_len

    def measure(model) -> dict[str, float]:
        model.eval()
        return {name: evaluate_case(model.full_sort_scores, case, max_len)["ndcg@10"]
                for name, case in (("valid", split.valid), ("test", split.test))}

    rows = {f"parent {tag} {folder}": measure(m) for tag, folder, (m, _, _) in zip("AB", args.parents, loaded)}
    order = sorted(range(2), key=lambda i: -list(rows.values())[i]["valid"])  # better parent first: the anchor
    models = [loaded[i][0] for i in order]
    sds = [m.state_dict() for m in models]
    child = copy.deepcopy(models[0])
    seconds = {}
    for name, method, extra in (("linear", "linear", None), ("cki data-free", "cki", None)):
        t0 = time.perf_counter()
        child.load_state_dict(merge_state_dicts(make_method(method), sds, [0.5, 0.5], extra=extra))
        seconds[name] = time.perf_counter() - t0
        rows[name] = measure(child)
    t0 = time.perf_counter()
    compat = learned_compat(child, sds, split.train, args.steps, args.batch, args.seed)
    child.load_state_dict(merge_state_dicts(make_method("cki"), sds, [0.5, 0.5], extra={"local_compat": compat}))
    seconds["cki learned"] = time.perf_counter() - t0
    rows["cki learned"] = measure(child)

    best = max(r["test"] for k, r in rows.items() if k.startswith("parent"))
    print(f"SASRec parents and merges, full ranking, {len(split.test.targets)} users; NDCG@10")
    print(f"{'':<34}{'valid':>9}{'test':>9}{'test / best parent':>20}")
    for name, r in rows.items():
        print(f"{name:<34}{r['valid']:>9.4f}{r['test']:>9.4f}{r['test'] / best:>20.3f}")
    if args.json:
        args.json.write_text(json.dumps({"ndcg@10": rows, "merge_seconds": seconds, "steps": args.steps,
                                         "parents": args.parents, "halves_from": str(args.halves or "")}, indent=2))


if __name__ == "__main__":
    main()
