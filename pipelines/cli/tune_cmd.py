"""``tandem tune srm``: Optuna search over SRM and training settings, selected on validation, resumable."""

from __future__ import annotations

import argparse
import sys

from pipelines.cli.common import add_parser
from tandem.data.options import add_dataset_arguments, load_dataset, options_from_args
from tandem.errors import TandemError


def _tune_srm(args: argparse.Namespace) -> int:
    from pipelines import configs
    from pipelines.tune_srm import load_space, tune_srm

    if args.trials < 1:
        raise TandemError(f"--trials must be >= 1, got {args.trials}; it counts completed trials in --out")
    if args.timeout is not None and args.timeout <= 0:
        raise TandemError(f"--timeout must be > 0 seconds, got {args.timeout}")
    space = load_space(configs.resolve(args.space, prefix="tune_", flag="--space"))
    opts = options_from_args(args)
    ds = load_dataset(opts)
    best = tune_srm(ds, opts, space, args.out, args.trials, timeout=args.timeout, seed=args.seed,
                    progress=not args.quiet)
    print(f"best of {best['trials_complete']} trials: #{best['trial']} valid NDCG@10 {best['valid_ndcg@10']:.4f} "
          f"with {best['params']}", file=sys.stderr)
    print(f"settings: {args.out}/best.yaml; checkpoint: {args.out}/best; trials: {args.out}/trials.png",
          file=sys.stderr)
    return 0


def _srm_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--space", default="tune_sasrec", metavar="FILE.yaml",
                   help="search-space YAML (model, fixed, params), or a packaged one by name: tune_sasrec, "
                        "tune_gru4rec (default: tune_sasrec)")
    p.add_argument("--out", required=True, metavar="DIR", help="study folder: journal, trial checkpoints, best.yaml, "
                   "best/, trials.png (a rerun continues the study)")
    p.add_argument("--trials", type=int, default=20, help="completed trials to reach, earlier runs included "
                   "(default: 20)")
    p.add_argument("--timeout", type=float, metavar="SECONDS", help="stop starting trials after this long")
    p.add_argument("--seed", type=int, default=0, help="seed of the TPE sampler (default: 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_dataset_arguments(p)


def register(sub) -> None:
    tune = sub.add_parser("tune", help="hyperparameter search", description="Hyperparameter search with Optuna.")
    tsub = tune.add_subparsers(dest="tune_command", metavar="SUBCOMMAND", required=True)
    add_parser(tsub, "srm", "search SRM and training settings with Optuna's TPE sampler, each trial a full "
               "`tandem train srm` run selected on validation NDCG@10; resumable, including a killed trial",
               _tune_srm, _srm_args)
