"""``tandem build``: the whole pipeline (semantic IDs, LLM, SRM, parameter generator, collaborative SRM, thresholds)
into one artifact store; stages that are already built are skipped."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pipelines.cli.candidates_cmd import add_engine_args, engine_options
from pipelines.cli.common import add_parser
from tandem.errors import TandemError


def build_config_from_args(args: argparse.Namespace):
    from pydantic import ValidationError

    from pipelines.build import BuildConfig
    from tandem.config import read_yaml_mapping

    values: dict = {}
    if args.config:
        values = read_yaml_mapping(args.config, "build config", "pass --config with a YAML file of build settings")
    for name in ("dataset", "profile", "llm_epochs", "n_candidates", "policy", "request_ratio", "valid_users"):
        if getattr(args, name, None) is not None:
            values[name] = getattr(args, name)
    if args.sequential:
        values["parallel"] = False
    try:
        return BuildConfig(**values)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        raise TandemError(f"build setting {field}={err.get('input')!r}: {err['msg']}; see `tandem build --help`") \
            from None


def _build(args: argparse.Namespace) -> int:
    from pipelines.build import Builder
    from tandem.artifacts import default_store

    cfg = build_config_from_args(args)
    out = Path(args.out) if args.out else default_store(cfg.dataset, cfg.profile)
    manifest = Builder(out, cfg, engine=engine_options(args)).build()
    stages = manifest["stages"]
    for name, entry in stages.items():
        print(f"{name:<11}{entry['seconds']:>8.1f} s  {json.dumps(entry['summary'], default=str)[:100]}")
    print(f"artifact store: {out} ({manifest.get('total_seconds', 0):.0f} s of stage time)", file=sys.stderr)
    return 0


def register(sub) -> None:
    p = add_parser(sub, "build", "build everything the service needs into one artifact store: semantic IDs, the "
                   "generative LLM, the SASRec SRM, the parameter generator, the LSC4Rec collaborative SRM and the "
                   "fusion/policy thresholds; stages already built with the same inputs are skipped", _build)
    p.add_argument("--dataset", help="built-in name, atomic folder or CSV/TSV (default: ml-100k)")
    p.add_argument("--profile", choices=("tiny", "smollm"), help="generative LLM profile (default: tiny)")
    p.add_argument("--out", metavar="DIR", help="artifact store (default: $TANDEM_HOME/artifacts/<dataset>-<profile>)")
    p.add_argument("--config", metavar="FILE", help="YAML with any BuildConfig (pipelines/build.py); flags win")
    p.add_argument("--llm-epochs", type=float, help="LLM epochs (default 5, shorter than the packaged sft_tiny config)")
    p.add_argument("--n-candidates", type=int, help="LLM candidate list length, 1..100 (default 100)")
    p.add_argument("--policy", help="request policy the server applies (default lsc4rec)")
    p.add_argument("--request-ratio", type=float, help="its target request ratio (default 0.2)")
    p.add_argument("--valid-users", type=int, help="calibrate thresholds on the first N validation users")
    p.add_argument("--sequential", action="store_true", help="train the LLM after the SRM instead of beside it")
    add_engine_args(p)
