"""``tandem merge``: merge PEFT LoRA experts on exact ΔW and re-factorise to one adapter (CKI arXiv 2501.07596;
Graft/CAPS arXiv 2506.23940). Takes a YAML recipe (``--config``) or the same settings as flags."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from pipelines.cli.common import add_parser, dump, refuse_flags_with_config
from tandem.errors import TandemError


def _parse_value(text: str) -> Any:
    """``--param`` values are YAML scalars: 0.5 -> float, 3 -> int, true -> bool, anything else a string."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _adapter_spec(text: str) -> dict[str, Any]:
    """``PATH`` or ``PATH:WEIGHT`` (the weight is the text after the last colon when it parses as a number)."""
    path, sep, weight = text.rpartition(":")
    if sep and path:
        try:
            return {"path": path, "weight": float(weight)}
        except ValueError:
            pass
    return {"path": text}


MERGE_KEYS = ("method", "out", "rank", "base_model", "calibration")
_FLAG = {"method": "--method", "adapters": "--adapter", "out": "--out", "rank": "--rank", "base_model": "--base-model",
         "calibration": "--calibration", "parameters": "--param", "adapter_calibration": "--adapter-calibration",
         "calibration_examples": "--calibration-examples", "calibration_steps": "--calibration-steps"}


def config_from_args(args: argparse.Namespace):
    from merging.config import load_config, make_config

    flags = {"method": args.method, "adapters": args.adapter, "out": args.out, "rank": args.rank,
             "base_model": args.base_model, "calibration": args.calibration, "parameters": args.param,
             "adapter_calibration": args.adapter_calibration, "calibration_examples": args.calibration_examples,
             "calibration_steps": args.calibration_steps}
    if args.config:
        refuse_flags_with_config([_FLAG[k] for k, v in flags.items() if v is not None])
        return load_config(args.config)
    values: dict[str, Any] = {k: v for k, v in flags.items() if v is not None and k in MERGE_KEYS}
    values["adapters"] = [_adapter_spec(a) for a in args.adapter or []]
    per = args.adapter_calibration or []
    if per and len(per) != len(values["adapters"]):
        raise TandemError(f"--adapter-calibration was given {len(per)} times for {len(values['adapters'])} adapters; "
                          f"give one per --adapter, in the same order")
    for spec, path in zip(values["adapters"], per):
        spec["calibration"] = path
    options = {"max_examples": args.calibration_examples, "steps": args.calibration_steps}
    values["calibration_options"] = {k: v for k, v in options.items() if v is not None}
    params: dict[str, Any] = {}
    for item in args.param or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise TandemError(f"--param {item!r} is not key=value; pass e.g. --param density=0.5")
        params[key.strip()] = _parse_value(value)
    values["parameters"] = params
    return make_config(values, source="merge setting")


def _merge(args: argparse.Namespace) -> int:
    from merging.run import REPORT_NAME, plan, run_merge

    cfg = config_from_args(args)
    if args.dry_run:
        print(dump(plan(cfg)))
        print("dry run: nothing written", file=sys.stderr)
        return 0
    report = run_merge(cfg, progress=not args.quiet)
    err = report["reconstruction_error"]
    print(json.dumps({"out": cfg.out, "method": cfg.method, "rank": report["rank"], "modules": report["modules"],
                      "reconstruction_error_mean": err["mean"], "reconstruction_error_max": err["max"]}))
    print(f"wrote {cfg.out} (adapter_config.json, adapter_model.safetensors, {REPORT_NAME})", file=sys.stderr)
    return 0


def register(sub) -> None:
    p = add_parser(sub, "merge", "merge PEFT LoRA adapters on the same base model into one LoRA adapter: exact merge "
                   "of ΔW = scale·B·A per module, then truncated SVD to the output rank", _merge)
    p.add_argument("--config", metavar="YAML",
                   help="merge recipe: base_model, adapters [{path, weight}], method, parameters, calibration, rank, "
                        "out (instead of the flags below)")
    p.add_argument("--method", help="merge method: linear, task_arithmetic, ties, dare_linear, dare_ties, cki, caps")
    p.add_argument("--adapter", action="append", metavar="DIR[:WEIGHT]",
                   help="PEFT LoRA folder with an optional weight (default 1.0); repeat, at least twice")
    p.add_argument("--out", metavar="DIR", help="output adapter folder (replaced atomically)")
    p.add_argument("--rank", type=int,
                   help="output LoRA rank (default: the adapters' r, the largest if they differ; same serving cost)")
    p.add_argument("--param", action="append", metavar="KEY=VALUE",
                   help="method parameter, e.g. --param density=0.5 --param scale=1.0; repeat")
    p.add_argument("--base-model", metavar="NAME", help="expected base_model_name_or_path of every adapter")
    p.add_argument("--calibration", metavar="JSONL",
                   help="shared calibration data ({prompt, completion} per line) for cki (learned local term) and "
                        "caps (gradient×weight attribution, CKA report)")
    p.add_argument("--adapter-calibration", action="append", metavar="JSONL",
                   help="one per --adapter, in order: that expert's own calibration data (caps attribution)")
    p.add_argument("--calibration-examples", type=int, metavar="N", help="examples read per calibration file (32)")
    p.add_argument("--calibration-steps", type=int, metavar="N",
                   help="steps fitting CKI's learned local term (30; 0 = data-free rule)")
    p.add_argument("--dry-run", action="store_true", help="check everything and print the plan; write nothing")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
