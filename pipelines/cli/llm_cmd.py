"""``tandem llm sft``: train the generative recommender (TRL SFTTrainer on semantic-ID sequences)."""

from __future__ import annotations

import argparse

from pipelines.cli.common import add_parser


def _llm_sft(args: argparse.Namespace) -> int:
    from llm_cloud.train.sft import run_sft
    from llm_cloud.train.sft_config import load_sft_config
    from pipelines import configs

    cfg = load_sft_config(configs.resolve(args.config))
    run_sft(cfg, args.out or cfg.output_dir, args.overwrite)
    return 0


def register(sub) -> None:
    llm = sub.add_parser("llm", help="the cloud's generative recommender",
                         description="The cloud's generative recommender over semantic IDs (TIGER).")
    lsub = llm.add_subparsers(dest="llm_command", metavar="SUBCOMMAND", required=True)
    p = add_parser(lsub, "sft", "train the generative LM on semantic-ID sequences with TRL's SFTTrainer (same as "
                   "`python -m llm_cloud.train.sft`; use that module under `accelerate launch`)", _llm_sft)
    p.add_argument("--config", required=True, metavar="FILE",
                   help="YAML run config: a path, or a packaged one by name (sft_tiny, sft_smollm)")
    p.add_argument("--out", metavar="DIR", help="checkpoint folder (overrides output_dir of the config)")
    p.add_argument("--overwrite", action="store_true", help="discard an interrupted run's trainer checkpoints "
                   "instead of resuming from them")
