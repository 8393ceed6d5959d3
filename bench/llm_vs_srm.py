"""The generative recommender against SRM checkpoints on the same users, in one run: test NDCG@10 of each (the LLM's
top-``n`` lists from the tensorised trie beam search, the SRMs' full ranking) and the paired bootstrap over users of
LLM − SRM. Everything was chosen on validation before; this reads the test split once.

    python -m bench.llm_vs_srm --llm runs/cofi_exp/llm_rq --srm tuned=runs/tune_sasrec_100k/best \\
        --srm served=~/.cache/tandem/artifacts/ml-100k-tiny/srm --json docs/results/llm_vs_sasrec_ml100k.json
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    import torch

    from eval.bootstrap import format_interval, ndcg_at, paired_bootstrap
    from eval.evaluate import rank_targets
    from eval.llm import ranks_from_lists
    from llm_cloud.backends import load_backend
    from pipelines.cli.common import write_json
    from srm_device.training.checkpoint import load_srm_with_data
    from tandem.data.options import DatasetOptions, load_dataset
    from tandem.data.split import leave_one_out

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--llm", required=True, metavar="DIR", help="generative LLM checkpoint")
    ap.add_argument("--srm", action="append", required=True, metavar="NAME=DIR", help="an SRM checkpoint (repeatable)")
    ap.add_argument("--n", type=int, default=100, help="LLM list length (default 100)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--json", metavar="OUT", help="write the results here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    backend = load_backend("transformers", args.llm, batch_size=32, progress=False)
    case = leave_one_out(load_dataset(DatasetOptions(**backend.artifact.meta["dataset"])).sequences).test
    lists = backend.beam_candidates(case.histories, n=args.n)
    llm = ndcg_at(ranks_from_lists([c.items for c in lists], case.targets), 10)  # (u,)
    out: dict = {"llm": {"folder": args.llm, "test_ndcg@10": float(llm.mean())}, "users": len(llm)}
    print(f"LLM {args.llm}: test NDCG@10 {llm.mean():.4f}")
    for name, folder in (spec.split("=", 1) for spec in args.srm):
        model, meta, ds = load_srm_with_data(Path(folder).expanduser())
        if ds.fingerprint() != backend.artifact.meta.get("data_fingerprint"):
            raise SystemExit(f"{folder} was trained on other data than {args.llm}")
        model.eval()
        with torch.no_grad():
            srm = ndcg_at(rank_targets(model.full_sort_scores, case, model.config.max_len), 10)  # (u,)
        ci = paired_bootstrap(srm, llm)
        out[name] = {"folder": folder, "test_ndcg@10": float(srm.mean()), "llm_minus_srm": ci}
        print(f"{name} {folder}: test NDCG@10 {srm.mean():.4f}; LLM − it {format_interval(ci)}")
    write_json(args.json, out)


if __name__ == "__main__":
    main()
