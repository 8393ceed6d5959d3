"""``tandem data fetch`` and ``tandem data stats``."""

from __future__ import annotations

import argparse

from pipelines.cli.common import add_parser, checked_config, write_json
from tandem.data import fetch
from tandem.data.options import add_dataset_arguments, load_dataset, options_from_args
from tandem.data.protocols import SplitOptions, add_split_arguments


def _fetch(args: argparse.Namespace) -> int:
    already = fetch.is_fetched(args.name) and not args.force
    path = fetch.fetch(args.name, force=args.force)
    print(f"{args.name}: {'already in' if already else 'fetched into'} {path}")
    return 0


def _stats(args: argparse.Namespace) -> int:
    from tandem.data.stats import dataset_stats, format_stats

    split_opts = checked_config(SplitOptions, args)
    ds = load_dataset(options_from_args(args))
    stats = dataset_stats(ds)
    print(format_stats(stats))
    if split_opts.protocol == "realtime":
        from tandem.data.protocols import make_split

        stats["realtime"] = info = make_split(ds, split_opts).info
        print(f"\n{split_opts.name}: " + ", ".join(f"{k} {v:,}" if isinstance(v, int) else f"{k} {v:.4g}"
                                                   for k, v in info.items() if not isinstance(v, str)))
    write_json(args.json, stats)
    return 0


def register(sub) -> None:
    data = sub.add_parser("data", help="fetch datasets and describe them", description="Fetch and describe datasets.")
    dsub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    p = add_parser(dsub, "fetch", "put a built-in dataset into the cache ($TANDEM_HOME, default ~/.cache/tandem)",
                   _fetch)
    p.add_argument("name", choices=fetch.known_names(), help="built-in dataset")
    p.add_argument("--force", action="store_true", help="fetch again even if it is cached")
    p = add_parser(dsub, "stats", "users, items, interactions, density and sequence-length quantiles; with "
                   "--protocol realtime also the cut's counts", _stats)
    add_dataset_arguments(p, positional=True)
    add_split_arguments(p)
    p.add_argument("--json", metavar="FILE", help="also write the statistics as JSON")
