"""Entry point of the ``tandem`` console script: builds the parser from the command modules and maps user errors to
exit code 2 with a one-line message."""

from __future__ import annotations

import argparse
import sys
import warnings

from pipelines.cli import (
    align_cmd,
    build_cmd,
    candidates_cmd,
    data_cmd,
    eval_cmd,
    export_cmd,
    llm_cmd,
    merge_cmd,
    serve_cmd,
    sids_cmd,
    simulate_cmd,
    train_cmd,
    tune_cmd,
)
from pipelines.cli.common import LazyParser
from tandem import __version__
from tandem.errors import TandemError


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"tandem: warning: {message}\n"


def make_parser() -> argparse.ArgumentParser:
    parser = LazyParser(
        prog="tandem", description="Tandem: device–cloud collaborative recommendation (data, training, evaluation).")
    parser.add_argument("--version", action="version", version=f"tandem {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (data_cmd, train_cmd, tune_cmd, build_cmd, candidates_cmd, eval_cmd, export_cmd, sids_cmd, llm_cmd,
                   merge_cmd, align_cmd, simulate_cmd, serve_cmd):
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    warnings.formatwarning = _one_line_warning
    warnings.filterwarnings("ignore", module="torch")
    parser = make_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except TandemError as exc:
        print(f"tandem: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("tandem: interrupted; finished work is saved and the command resumes where it stopped",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
