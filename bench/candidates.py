"""The reference trie beam search (transformers' ``generate`` with ``prefix_allowed_tokens_fn``) against the tensorised
one (:mod:`llm_cloud.generative.fast_decode`), side by side in one run, on generative-recommender checkpoints (TIGER,
arXiv 2305.05065).

For the first ``--users`` ML-100K leave-one-out test histories and ``--n`` candidates it prints, per checkpoint:
lists/s for each search and their ratio; the agreement (users whose top-n is the same items in the same order, and the
largest score difference among them); and the fraction of the compute floor reached: the search's matmul FLOPs
(prompt once per user, then every live beam at every depth but the last, the vocabulary projection only where a
distribution is needed) over the machine's float32 matmul throughput measured in the same run, divided by the fast
search's time.

    OMP_NUM_THREADS=1 python -m bench.candidates --json docs/results/candidates_tiny.json
    python -m bench.candidates --llm tiny=STORE/llm --llm smollm=OTHER/llm
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from bench.llm_backends import load_histories


def matmul_flops_per_s(size: int = 512, seconds: float = 2.0) -> float:
    """float32 GEMM throughput of this process (its torch threads), FLOP/s."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        torch.mm(a, b)
        reps += 1
    return 2 * size**3 * reps / (time.perf_counter() - t0)


def search_flops(model, prompt_lens: list[int], beams: int, width: int) -> float:
    """Matmul FLOPs of one search over these prompts: projections and MLP per token, attention over the context, the
    vocabulary projection for the last prompt token and every stepped beam."""
    c = model.config
    h, layers, inter, vocab = c.hidden_size, c.num_hidden_layers, c.intermediate_size, c.vocab_size
    kv = h * c.num_key_value_heads // c.num_attention_heads
    per_token = layers * 2 * (2 * h * h + 2 * h * kv + 3 * h * inter)  # q, o, k, v projections; gated MLP
    total = 0.0
    for t in prompt_lens:
        total += t * per_token + layers * 2 * 2 * h * t * (t + 1) / 2 + 2 * h * vocab  # prompt, causal attention
        for d in range(1, width):  # steps 1..W-1 feed `beams` tokens each
            total += beams * (per_token + layers * 2 * 2 * h * (t + d) + 2 * h * vocab)
    return total


def run(name: str, folder: Path, users: int, n: int, batch_size: int, floor: float) -> dict:
    from llm_cloud.generative.checkpoint import load_artifact
    from llm_cloud.generative.decode import beam_candidates, prompt_ids
    from llm_cloud.generative.fast_decode import TrieTables, fast_beam_candidates

    artifact = load_artifact(folder)
    model, fmt = artifact.load_model(), artifact.fmt
    histories = load_histories(artifact, users)
    tables = TrieTables.build(fmt.codec.item_tokens)
    kw = dict(n=n, max_items=artifact.max_items, batch_size=batch_size)
    beam_candidates(model, fmt, histories[:2], **kw)  # warm-up
    fast_beam_candidates(model, fmt, histories[:2], tables=tables, **kw)
    t0 = time.perf_counter()
    ref = beam_candidates(model, fmt, histories, **kw)
    ref_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    fast = fast_beam_candidates(model, fmt, histories, tables=tables, **kw)
    fast_s = time.perf_counter() - t0
    same = [a.items.tolist() == b.items.tolist() for a, b in zip(ref, fast)]
    diff = max((float(np.abs(a.scores - b.scores).max()) for a, b, s in zip(ref, fast, same) if s and len(a.items)),
               default=0.0)
    lens = [len(p) for p in prompt_ids(fmt, histories, artifact.max_items)]
    flops = search_flops(model, lens, max(n, 2), fmt.codec.width)
    out = {"users": len(histories), "n": n, "reference_lists_per_s": len(histories) / ref_s,
           "fast_lists_per_s": len(histories) / fast_s, "speedup": ref_s / fast_s,
           "agreement": float(np.mean(same)), "max_score_diff": diff, "search_gflop": flops / 1e9,
           "matmul_gflop_per_s": floor / 1e9, "floor_fraction": flops / floor / fast_s}
    print(f"{name}: reference {out['reference_lists_per_s']:.2f} lists/s, tensorised {out['fast_lists_per_s']:.2f} "
          f"lists/s ({out['speedup']:.2f}x); same top-{n} for {out['agreement']:.1%} of users (max score diff "
          f"{diff:.1e}); {flops / 1e9:.2f} GFLOP at {floor / 1e9:.1f} GFLOP/s: {out['floor_fraction']:.1%} of the "
          f"compute floor", flush=True)
    return out


def main() -> None:
    from tandem.artifacts import default_store

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--llm", action="append", metavar="NAME=DIR",
                        help="a checkpoint to measure (repeatable; default: tiny=the embedded default store's llm/)")
    parser.add_argument("--users", type=int, default=200, help="first N test users (default 200)")
    parser.add_argument("--n", type=int, default=100, help="candidates per user (default 100)")
    parser.add_argument("--batch-size", type=int, default=8, help="users per batch, both searches (default 8)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--json", metavar="OUT", help="write the results here")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    pairs = [s.split("=", 1) for s in args.llm] if args.llm else [["tiny", str(default_store() / "llm")]]
    floor = matmul_flops_per_s()
    results = {name: run(name, Path(folder), args.users, args.n, args.batch_size, floor) for name, folder in pairs}
    results["threads"] = args.threads
    if args.json:
        from tandem.io import atomic_write_json

        atomic_write_json(args.json, results)


if __name__ == "__main__":
    main()
