"""``tandem export onnx``."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipelines.cli.common import add_parser
from tandem.errors import TandemError

# An export whose scores differ from torch's by more than this is a bug in the exporter, not a rounding difference.
PARITY_TOLERANCE = 1e-4


def _export_onnx(args: argparse.Namespace) -> int:
    from srm_device.onnx_export import export_onnx
    from srm_device.onnx_runtime import OnnxReranker, verify_export
    from srm_device.training.checkpoint import load_checkpoint

    if args.rank < 1:
        raise TandemError(f"--rank must be >= 1, got {args.rank}")
    if Path(args.out).is_dir():
        raise TandemError(f"--out {args.out} is a folder; pass a file name such as {Path(args.out) / 'srm.onnx'}")
    model, _ = load_checkpoint(args.srm)
    try:
        path = export_onnx(model, args.out, args.rank, opset=args.opset, edit=args.edit)
    except ValueError as exc:
        raise TandemError(str(exc)) from None
    diff = verify_export(model, OnnxReranker(path))
    if diff > PARITY_TOLERANCE:
        raise TandemError(f"the exported graph {path} disagrees with the torch model (max abs diff {diff:.2e}); "
                          f"this is an exporter bug: report it with the checkpoint {args.srm}")
    cfg = model.config
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB): {model.name}, {model.n_items} items, hidden "
          f"{cfg.hidden_size}, max_len {cfg.max_len}, {args.edit} edit rank {args.rank}; matches torch within "
          f"{diff:.1e}")
    return 0


def register(sub) -> None:
    ex = sub.add_parser("export", help="export models for the device", description="Export models for the device.")
    xsub = ex.add_subparsers(dest="export_command", metavar="SUBCOMMAND", required=True)
    p = add_parser(xsub, "onnx", "export an SRM checkpoint's rerank step (history + candidates + generated "
                   "parameters -> scores) to ONNX for onnxruntime", _export_onnx)
    p.add_argument("--srm", required=True, metavar="DIR", help="folder written by `tandem train srm`")
    p.add_argument("--out", required=True, metavar="FILE.onnx", help="ONNX file to write (replaced atomically)")
    p.add_argument("--rank", type=int, default=8,
                   help="rank of the generated head parameters; must match the parameter generator (default: 8)")
    p.add_argument("--edit", choices=("head", "layers"), default="head",
                   help="which generated parameters the graph takes: the head edit, or the multi-layer DUET edits of "
                        "the last block plus the head (SASRec only) (default: head)")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset version (default: the exporter's)")
