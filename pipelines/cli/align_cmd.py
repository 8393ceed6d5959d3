"""``tandem align synthesize|filter|sft|adapo``: self-evaluation training (Cas-SEAT arXiv 2501.05662, AdaPO arXiv
2508.09155). Each step takes ``--config FILE.yaml`` or the same settings as flags, and resumes when rerun."""

from __future__ import annotations

import argparse
import importlib
import json

from pipelines.cli.common import add_parser, as_user_error, refuse_flags_with_config
from tandem.config import add_dataclass_arguments, read_yaml_mapping

# step -> (config class, runner, what it does)
STEPS = {
    "synthesize": ("alignment.seat.config:SynthConfig", "alignment.seat.synthesize:run_synthesize",
                   "Cas-SEAT data synthesis: source filtering, then the teacher's cascaded CoT and evaluation prompts "
                   "per problem (resumable: problems with an ok record are skipped)"),
    "filter": ("alignment.seat.config:FilterConfig", "alignment.seat.filter:run_filter",
               "Cas-SEAT labelled-data filtering (format, length, gold, correctness, self-consistency) into the CoT "
               "and self-evaluation training sets, with counts per stage"),
    "sft": ("alignment.seat.config:SeatSFTConfig", "alignment.seat.sft:run_sft",
            "mix CoT and self-evaluation data at cot_ratio and fine-tune the student with TRL's SFTTrainer "
            "(resumes from the newest checkpoint)"),
    "adapo": ("alignment.adapo.config:AdapoConfig", "alignment.adapo.trainer:run_adapo",
              "AdaPO on TRL's GRPOTrainer: adaptive sub-task rewards and a reward-gap KL coefficient (resumes from "
              "the newest checkpoint)"),
}


def _load(ref: str):
    module, name = ref.split(":")
    return getattr(importlib.import_module(module), name)


def _config(step: str, args: argparse.Namespace):
    from alignment.seat.config import from_mapping

    cls = _load(STEPS[step][0])
    flags = {f: getattr(args, f) for f in cls.__dataclass_fields__ if getattr(args, f, None) is not None}
    if args.config:
        refuse_flags_with_config(["--" + f.replace("_", "-") for f in flags])
        values = read_yaml_mapping(args.config, f"align {step} config", "pass --config with a YAML file")
        return from_mapping(cls, values, f"align {step} config {args.config}")
    return from_mapping(cls, flags, f"align {step} setting")


def _run(args: argparse.Namespace) -> int:
    cfg = _config(args.align_command, args)
    try:
        report = _load(STEPS[args.align_command][1])(cfg, progress=not args.quiet)
    except ValueError as exc:  # the steps raise ValueError naming the rule, the value and the fix for bad input
        raise as_user_error(exc) from None
    print(json.dumps(report, indent=2, default=str))
    return 0


def register(sub) -> None:
    align = sub.add_parser("align", help="self-evaluation training: Cas-SEAT data + SFT, AdaPO RL",
                           description="Self-evaluation training for the LLM: Cas-SEAT (synthesize, filter, sft) "
                                       "and AdaPO (adapo).")
    asub = align.add_subparsers(dest="align_command", metavar="STEP", required=True)
    for step, (cls_ref, _, help_text) in STEPS.items():
        add_parser(asub, step, help_text, _run, lambda p, ref=cls_ref: _step_args(p, ref))


def _step_args(p: argparse.ArgumentParser, cls_ref: str) -> None:
    p.add_argument("--config", metavar="FILE.yaml", help="YAML with the settings below (instead of flags)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_dataclass_arguments(p, _load(cls_ref))
