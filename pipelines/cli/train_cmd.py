"""``tandem train srm``, ``tandem train paramgen``, ``tandem train collab`` and ``tandem train thinkrec``."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields

from pipelines.cli.common import add_parser, as_user_error, checked_config
from tandem.config import add_dataclass_arguments
from tandem.data.options import add_dataset_arguments, load_dataset, options_from_args
from tandem.data.protocols import add_split_arguments
from tandem.errors import TandemError

MODEL_CHOICES = ("sasrec", "gru4rec")


def _train_srm(args: argparse.Namespace) -> int:
    from eval.metrics import format_table
    from pipelines.train_srm import train_srm
    from srm_device.models import SRMConfig, default_config
    from srm_device.training.config import TrainConfig

    try:
        model_cfg = default_config(args.model, **{f.name: getattr(args, f.name) for f in fields(SRMConfig)})
        model_cfg.validate()
    except ValueError as exc:
        raise TandemError(str(exc)) from None
    train_cfg = checked_config(TrainConfig, args)
    opts = options_from_args(args)
    ds = load_dataset(opts)
    from tandem.data.protocols import SplitOptions

    split_opts = checked_config(SplitOptions, args)
    result = train_srm(ds, opts, args.model, model_cfg, train_cfg, args.out, overwrite=args.overwrite,
                       mask_history=args.mask_history, split_opts=split_opts)
    print(f"{args.model} on {ds.name}: {result.stopped} after {result.epochs_run} epochs "
          f"({result.train_seconds:.0f}s); best validation at epoch {result.best_epoch}", file=sys.stderr)
    print(format_table(result.best_valid))
    print(f"checkpoint: {args.out}", file=sys.stderr)
    return 0


def _train_paramgen(args: argparse.Namespace) -> int:
    from llm_cloud.paramgen.config import ParamGenConfig
    from pipelines.train_paramgen import train_paramgen

    cfg = checked_config(ParamGenConfig, args)
    if args.edit == "layers":
        from pipelines.train_paramgen import train_layer_generator

        try:
            report = train_layer_generator(args.srm, args.out, cfg, overwrite=args.overwrite)
        except ValueError as exc:
            raise as_user_error(exc) from None
        best = report["best_valid"]
        print(f"multi-layer generator: best validation ndcg@10 {best['ndcg@10']:.4f} (epoch {report['best_epoch'] + 1}"
              f" of {report['epochs_run']}), {report['n_params']:,} parameters per update "
              f"({report['full_layer_params']:,} for the edited layers whole)")
        print(f"parameter generator: {args.out}", file=sys.stderr)
        return 0
    report = train_paramgen(args.srm, args.out, cfg, overwrite=args.overwrite)
    rows = report["test"]
    print(f"{'test':<12}{'ndcg@10':>10}{'hr@10':>10}")
    for name, m in rows.items():
        print(f"{name:<12}{m['ndcg@10']:>10.4f}{m['hr@10']:>10.4f}")
    print("bytes per update: " + ", ".join(f"{k} {v:,}" for k, v in report["bytes_per_update"].items()))
    print(f"parameter generator: {args.out}", file=sys.stderr)
    return 0


def _train_collab(args: argparse.Namespace) -> int:
    from pipelines.collab import train_collab
    from srm_device.training.config import CollabConfig

    cfg = checked_config(CollabConfig, args)
    report = train_collab(args.llm, args.srm, args.out, cfg, overwrite=args.overwrite)
    inl, full = report["valid_in_list"], report["valid_full"]
    print(f"validation ({report['n_valid_users']} users; LLM recall@{report['n_candidates']} "
          f"{report['valid_recall@n']:.3f})")
    print(f"{'':<12}{'in-list ndcg@10':>17}{'hr@10':>8}{'full ndcg@10':>14}{'hr@10':>8}")
    for name in ("llm", "srm", "collab"):
        cells = f"{inl[name]['ndcg@10']:>17.4f}{inl[name]['hr@10']:>8.4f}"
        cells += f"{full[name]['ndcg@10']:>14.4f}{full[name]['hr@10']:>8.4f}" if name in full else f"{'-':>14}{'-':>8}"
        print(f"{name:<12}{cells}")
    epoch = "kept the original SRM" if report["kept_original"] else f"best epoch {report['best_epoch'] + 1}"
    print(f"{report['n_examples']} examples, {epoch}; candidates {report['seconds_candidates']:.0f}s, "
          f"fine-tuning {report['seconds_finetune']:.0f}s", file=sys.stderr)
    print(f"collab SRM: {args.out}/srm", file=sys.stderr)
    return 0


def _srm_args(p: argparse.ArgumentParser) -> None:
    from srm_device.models import SRMConfig
    from srm_device.training.config import TrainConfig

    p.add_argument("--model", choices=MODEL_CHOICES, default="sasrec", help="which SRM (default: sasrec)")
    p.add_argument("--out", required=True, metavar="DIR", help="checkpoint folder (resumed if it holds a run)")
    p.add_argument("--overwrite", action="store_true", help="discard what --out holds and start again")
    p.add_argument("--mask-history", action="store_true",
                   help="exclude the user's past items when ranking for validation (default: not, as RecBole)")
    add_dataset_arguments(p)
    add_split_arguments(p)
    add_dataclass_arguments(p.add_argument_group("model", "model hyperparameters (defaults depend on --model)"),
                            SRMConfig)
    add_dataclass_arguments(p.add_argument_group("training"), TrainConfig)


def _paramgen_args(p: argparse.ArgumentParser) -> None:
    from llm_cloud.paramgen.config import ParamGenConfig

    p.add_argument("--srm", required=True, metavar="DIR", help="trained SRM checkpoint (`tandem train srm --out`)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (resumed if it holds a run)")
    p.add_argument("--overwrite", action="store_true", help="discard what --out holds and start again")
    p.add_argument("--edit", choices=("head", "layers"), default="head",
                   help="what the generator edits: the head (served as duet_head), or the last transformer block's "
                        "attention output and second feed-forward layer plus the head (duet; SASRec only; put it in "
                        "the store's duet/ folder to serve it) (default: head)")
    add_dataclass_arguments(p.add_argument_group("parameter generator"), ParamGenConfig)


def _collab_args(p: argparse.ArgumentParser) -> None:
    from srm_device.training.config import CollabConfig

    p.add_argument("--llm", required=True, metavar="DIR", help="generative LLM checkpoint (`tandem llm sft --out`)")
    p.add_argument("--srm", required=True, metavar="DIR", help="trained SRM checkpoint (`tandem train srm --out`)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output folder: candidates/, srm/, report.json (cached lists are reused)")
    p.add_argument("--overwrite", action="store_true", help="discard what --out holds, cached lists included")
    add_dataclass_arguments(p.add_argument_group("collaborative training"), CollabConfig)


def _train_thinkrec(args: argparse.Namespace) -> int:
    from llm_cloud.thinkrec.train import run_train
    from llm_cloud.thinkrec.train_config import ThinkRecTrainConfig

    report = run_train(checked_config(ThinkRecTrainConfig, args), progress=not args.quiet)
    print(json.dumps(report, indent=2, default=str))
    return 0


def _thinkrec_args(p: argparse.ArgumentParser) -> None:
    from llm_cloud.thinkrec.train_config import ThinkRecTrainConfig

    p.add_argument("--data", required=True, metavar="FILE", help="JSONL of {id, prompt, label, trace?} rows")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output folder: checkpoints, final/ (the adapter), train_report.json; resumed when rerun")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_dataclass_arguments(p.add_argument_group("ThinkRec training"), ThinkRecTrainConfig, skip=("data", "out"))


def register(sub) -> None:
    train = sub.add_parser("train", help="train models", description="Train models.")
    tsub = train.add_subparsers(dest="train_command", metavar="SUBCOMMAND", required=True)
    add_parser(tsub, "srm", "train a sequential recommender (SASRec or GRU4Rec) with full cross-entropy and early "
               "stopping on validation NDCG@10; resumes from --out", _train_srm, _srm_args)
    add_parser(tsub, "paramgen", "train the cloud hypernetwork that generates the SRM's head parameters from the "
               "user's recent items (DUET), with the SRM frozen; then fit Persona prototypes", _train_paramgen,
               _paramgen_args)
    add_parser(tsub, "collab", "LSC4Rec collaborative training (arXiv 2502.08667): the LLM's candidate lists for the "
               "last training prefixes (cached in --out, resumable) become hard negatives for fine-tuning the SRM "
               "to rank inside them", _train_collab, _collab_args)
    add_parser(tsub, "thinkrec", "train one ThinkRec LoRA adapter (arXiv 2505.15091) on rows of {id, prompt, label, "
               "trace?} with the alpha*BCE + beta*LM loss; resumes from --out (`tandem eval thinkrec` builds the rows, "
               "the general adapter and the experts in one go)", _train_thinkrec, _thinkrec_args)
