"""Request-policy targets of the device tier, printed as ratios measured in one run.

For each policy: test NDCG@10 at each request ratio as a fraction of the NDCG@10 at 100% requests, and its lift over
``random`` at the same ratio; and the bytes of a Persona update as a fraction of a full head update. Targets (issue):
a paper policy (lsc4rec or intellectreq) at 20% keeps >= 97% of the 100% NDCG and beats random; prototype+edit
<= 10% of the full-head bytes.

    python bench/device_policies.py --srm runs/sasrec --candidates srm:runs/gru4rec [--paramgen runs/paramgen]
        [--staleness 1,5] [--fusion srm] [--json FILE]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eval.candidates import parse_source  # noqa: E402
from eval.device import DeviceEvalConfig, evaluate_device  # noqa: E402
from llm_cloud.paramgen.checkpoint import load_device_models  # noqa: E402
from srm_device.head import HeadSpec  # noqa: E402
from srm_device.persona import FLOAT32  # noqa: E402
from tandem.data.split import leave_one_out  # noqa: E402
from tandem.io import atomic_write_json  # noqa: E402

PAPER_POLICIES = ("lsc4rec", "intellectreq")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--srm", required=True)
    ap.add_argument("--candidates", default="srm")
    ap.add_argument("--paramgen")
    ap.add_argument("--staleness", default="1,5", help="comma-separated cache staleness values (default: 1,5)")
    ap.add_argument("--fusion", default=None, help="fusion rule (default: best on validation)")
    ap.add_argument("--json")
    args = ap.parse_args()

    srm, ds, gen, book, recent_k = load_device_models(args.srm, args.paramgen)
    split = leave_one_out(ds.sequences)
    source = parse_source(args.candidates, srm, split.train)
    results = {}
    for staleness in (int(s) for s in args.staleness.split(",")):
        cfg = DeviceEvalConfig(staleness=staleness, recent_k=recent_k, fusion=args.fusion)
        rep = evaluate_device(srm, source, split.valid, split.test, cfg, gen, book)
        full = rep["policies"]["always"]["1"]["ndcg@10"]
        print(f"\n{ds.name}, {source.name} top-{cfg.n_candidates}, cache {staleness} items stale, fusion "
              f"{rep['meta']['fusion_used_for_policies']}: NDCG@10 at 100% = {full:.4f}, never = "
              f"{rep['policies']['never']['1']['ndcg@10']:.4f}")
        print(f"{'policy':<14}" + "".join(f"{r + ' /100%':>12}{'/random':>9}" for r in rep["policies"]["random"]))
        ratios = {}
        for name, rows in rep["policies"].items():
            if name in ("always", "never"):
                continue
            cells = {r: (row["ndcg@10"] / full, row["ndcg@10"] / rep["policies"]["random"][r]["ndcg@10"])
                     for r, row in rows.items()}
            ratios[name] = cells
            print(f"{name:<14}" + "".join(f"{a:>12.3f}{b:>9.3f}" for a, b in cells.values()))
        best = max(PAPER_POLICIES, key=lambda p: ratios[p]["0.2"][0])
        print(f"target: {best} at 20% keeps {ratios[best]['0.2'][0]:.1%} of the 100% NDCG (>= 97%: "
              f"{'met' if ratios[best]['0.2'][0] >= 0.97 else 'NOT met'}), x{ratios[best]['0.2'][1]:.3f} of random")
        results[str(staleness)] = {"report": rep, "ratios": ratios}
    if book is not None:
        spec = HeadSpec(srm.config.hidden_size, gen.spec.rank)
        share = book.update_bytes() / (FLOAT32 * spec.full_params)
        print(f"\nbytes per update: prototype+edit {book.update_bytes()} B / full head {FLOAT32 * spec.full_params} B "
              f"= {share:.2%} (target <= 10%: {'met' if share <= 0.10 else 'NOT met'})")
    if args.json:
        atomic_write_json(args.json, results)


if __name__ == "__main__":
    main()
