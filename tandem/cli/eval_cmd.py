"""``tandem eval srm``."""

from __future__ import annotations

import argparse

from tandem.cli.common import add_parser, write_json
from tandem.data.options import add_dataset_arguments, options_from_args


def _eval_srm(args: argparse.Namespace) -> int:
    from eval.metrics import format_table
    from eval.srm import evaluate_checkpoint

    ds_options = options_from_args(args) if args.dataset else None
    report = evaluate_checkpoint(args.checkpoint, args.split, args.mask_history, ds_options)
    masked = "history masked" if report.mask_history else "history not masked"
    print(f"{report.model} on {report.dataset}, {report.split} split, {report.n_users} users, full ranking, "
          f"{masked}")
    print(format_table(report.metrics))
    write_json(args.json, report.to_json())
    return 0


def register(sub) -> None:
    ev = sub.add_parser("eval", help="evaluate models", description="Evaluate models.")
    esub = ev.add_subparsers(dest="eval_command", metavar="SUBCOMMAND", required=True)
    p = add_parser(esub, "srm", "evaluate an SRM checkpoint with full ranking: HR, NDCG and MRR at 5, 10, 20",
                   _eval_srm)
    p.add_argument("--checkpoint", required=True, metavar="DIR", help="folder written by `tandem train srm`")
    p.add_argument("--json", metavar="FILE", help="write {dataset, model, split, metrics} as JSON")
    p.add_argument("--split", choices=["test", "valid"], default="test",
                   help="which leave-one-out target (default: test)")
    p.add_argument("--mask-history", action=argparse.BooleanOptionalAction, default=None,
                   help="exclude the user's past items from the ranking (default: as in training)")
    add_dataset_arguments(p)
