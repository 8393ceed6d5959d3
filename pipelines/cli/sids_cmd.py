"""``tandem sids build``: semantic IDs for a dataset's items (TIGER, arXiv 2305.05065; CoFiRec, arXiv 2511.22707)."""

from __future__ import annotations

import argparse
import sys

from pipelines.cli.common import add_parser
from tandem.data.options import add_dataset_arguments, options_from_args


def _split_fields(value: str | None) -> list[str] | None:
    return [f.strip() for f in value.split(",") if f.strip()] if value else None


def _sids_build(args: argparse.Namespace) -> int:
    from llm_cloud.semantic_ids.build import build_semantic_ids, check_out_dir, save_semantic_ids, validate
    from llm_cloud.semantic_ids.report import format_report

    validate(args.mode, args.levels, args.codebook_size, args.method, args.srm, args.vae_steps, args.pca_dim)
    check_out_dir(args.out)
    codes, report = build_semantic_ids(
        options_from_args(args), mode=args.mode, levels=args.levels, codebook_size=args.codebook_size,
        method=args.method, srm_dir=args.srm, seed=args.seed, category_fields=_split_fields(args.category_fields),
        title_fields=_split_fields(args.title_fields), vae_steps=args.vae_steps, pca_dim=args.pca_dim)
    save_semantic_ids(args.out, codes, report)
    print(format_report(report, report["config"]))
    print(f"wrote {args.out}/codes.npy {tuple(codes.shape)}, report.json, config.json", file=sys.stderr)
    return 0


def register(sub) -> None:
    sids = sub.add_parser("sids", help="semantic IDs for items", description="Semantic IDs for items: short code "
                          "tuples that the cloud LLM generates (TIGER; CoFiRec).")
    ssub = sids.add_subparsers(dest="sids_command", metavar="SUBCOMMAND", required=True)
    p = add_parser(ssub, "build", "quantise item embeddings into L levels of C codes plus a trailing level that "
                   "makes every item's code unique; writes codes.npy, report.json and config.json", _sids_build)
    p.add_argument("--mode", choices=["rq", "cofi"], default="rq",
                   help="rq: residual quantisation of the item text embedding; cofi: coarse to fine, level 1 from "
                        "category text, 2 from title text, 3 from the SRM's item embeddings (default: rq)")
    p.add_argument("--method", choices=["kmeans", "vae"], default="kmeans",
                   help="rq quantiser: residual k-means or a small RQ-VAE trained on CPU (default: kmeans)")
    p.add_argument("--levels", type=int, default=3, help="code levels before the trailing level (default: 3; cofi: 3)")
    p.add_argument("--codebook-size", type=int, default=256, help="codes per level, C (default: 256)")
    p.add_argument("--srm", metavar="DIR", help="SRM checkpoint trained on this dataset (needed by --mode cofi)")
    p.add_argument("--category-fields", metavar="F1,F2",
                   help="cofi: catalogue fields for level 1 (default: names with genre/class/category/tag)")
    p.add_argument("--title-fields", metavar="F1,F2",
                   help="cofi: catalogue fields for level 2 (default: names with title/name/description)")
    p.add_argument("--pca-dim", type=int, default=32,
                   help="rq with kmeans: quantise the top principal components of the text embedding, as TIGER "
                        "quantises a 32-d latent (0 = all 384 dimensions; default: 32)")
    p.add_argument("--vae-steps", type=int, default=300, help="training steps of --method vae (default: 300)")
    p.add_argument("--seed", type=int, default=2020, help="random seed of k-means and the RQ-VAE (default: 2020)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (replaced atomically)")
    add_dataset_arguments(p)
