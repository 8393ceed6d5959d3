"""Train and test one RecBole 1.2.1 sequential model; runs inside RecBole's own venv (see srm_vs_recbole.py).

Prints one JSON line: test metrics, best validation NDCG@10, epochs run and training wall time; with
``--targets-only``, the validation and test target of every user (raw ids) instead, without training.
This file imports only RecBole and torch, never Tandem, because it runs under another interpreter.
"""

import argparse
import json
import os
import sys
import time


def targets(split, dataset) -> dict:
    """user raw id -> target item raw id of one evaluation split."""
    feat = split.dataset.inter_feat
    users = dataset.id2token(dataset.uid_field, feat[dataset.uid_field].numpy())
    items = dataset.id2token(dataset.iid_field, feat[dataset.iid_field].numpy())
    return {str(u): str(i) for u, i in zip(users.tolist(), items.tolist())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data-path", required=True, help="folder that holds the DATASET/ folder of atomic files")
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--min-rating", type=float, help="keep interactions with rating >= this")
    ap.add_argument("--kcore", type=int, default=0, help="drop users and items with fewer interactions, repeatedly")
    ap.add_argument("--targets-only", action="store_true", help="print each user's targets and stop")
    ap.add_argument("--model", default="SASRec", choices=["SASRec", "GRU4Rec"])
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--stopping-step", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=2048)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=2020)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--workdir", required=True, help="RecBole checkpoints and logs go here")
    args = ap.parse_args()

    os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # RecBole reloads its own pickled checkpoint
    import torch

    torch.set_num_threads(args.threads)
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.model.sequential_recommender import GRU4Rec, SASRec
    from recbole.trainer import Trainer
    from recbole.utils import init_seed

    # Importing RecBole's sequential models turns anomaly detection on for the whole process (2x slower).
    torch.autograd.set_detect_anomaly(False)

    config_dict = {
        "data_path": args.data_path,
        "checkpoint_dir": os.path.join(args.workdir, "saved"),
        "log_wandb": False,
        "show_progress": False,
        "device": "cpu",
        "use_gpu": False,
        "seed": args.seed,
        "reproducibility": True,
        "epochs": args.epochs,
        "stopping_step": args.stopping_step,
        "train_batch_size": args.batch_size,
        "eval_batch_size": 4096,
        "learning_rate": args.lr,
        "loss_type": "CE",
        "train_neg_sample_args": None,
        "MAX_ITEM_LIST_LENGTH": 50,
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full", "group_by": "user"},
        "metrics": ["Hit", "NDCG", "MRR"],
        "topk": [5, 10, 20],
        "valid_metric": "NDCG@10",
        "load_col": {"inter": ["user_id", "item_id", "rating", "timestamp"]},
    }
    if args.min_rating is not None:
        config_dict["val_interval"] = {"rating": f"[{args.min_rating},inf)"}
    if args.kcore:
        config_dict["user_inter_num_interval"] = config_dict["item_inter_num_interval"] = f"[{args.kcore},inf)"
    if args.model == "SASRec":
        config_dict.update(hidden_size=64, inner_size=256, n_layers=2, n_heads=2)
    cls = {"SASRec": SASRec, "GRU4Rec": GRU4Rec}[args.model]
    config = Config(model=args.model, dataset=args.dataset, config_dict=config_dict)
    init_seed(config["seed"], config["reproducibility"])
    torch.set_num_threads(args.threads)  # init_seed may reset it
    dataset = create_dataset(config)
    train, valid, test = data_preparation(config, dataset)
    if args.targets_only:
        sys.stdout.write("TARGETS " + json.dumps({"valid": targets(valid, dataset), "test": targets(test, dataset),
                                                  "train_rows": len(train.dataset)}) + "\n")
        return
    model = cls(config, train.dataset).to(config["device"])
    trainer = Trainer(config, model)
    t0 = time.perf_counter()
    best_valid, _ = trainer.fit(train, valid, saved=True, show_progress=False, verbose=False)
    train_s = time.perf_counter() - t0
    result = trainer.evaluate(test, load_best_model=True, show_progress=False)
    epochs_run = len(trainer.train_loss_dict)
    out = {
        "model": args.model,
        "train_rows": len(train.dataset),
        "epochs_run": epochs_run,
        "best_epoch": epochs_run - 1 - trainer.cur_step,  # cur_step counts epochs since the best one
        "train_seconds": train_s,
        "valid_ndcg@10": float(best_valid),
        "metrics": {k.lower().replace("hit@", "hr@"): float(v) for k, v in result.items()},
    }
    sys.stdout.write("RESULT " + json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
