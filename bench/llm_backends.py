"""Transformers vs vLLM on one generative-recommender checkpoint (TIGER, arXiv 2305.05065): candidate lists per
second (trie-constrained beam search, n beams), greedy generation tokens per second, and whether the two engines
agree (fraction of identical top-10 lists, mean overlap@n).

Both engines get the same prompts: the last ``max_items`` items of the first K ML-100K leave-one-out test histories
(for generation, as many of the last items as leave room for the new tokens within the trained context).
vLLM's first call (one-off warm-up) and engine start are timed apart. Run it in the vLLM venv with the same thread
count for both, e.g. ``OMP_NUM_THREADS=1 python -m bench.llm_backends --users 50``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np


def load_histories(artifact, users: int) -> list[np.ndarray]:
    """The first ``users`` test histories of the checkpoint's dataset (leave-one-out split)."""
    from tandem.data.options import DatasetOptions, load_dataset
    from tandem.data.split import leave_one_out

    options = artifact.meta.get("dataset") or {"dataset": artifact.meta.get("dataset_name", "ml-100k")}
    ds = load_dataset(DatasetOptions(**options))
    return list(leave_one_out(ds.sequences).test.histories[:users])


def prompt_text(tokenizer, ids: list[int]) -> str:
    """Text that tokenizes back to exactly ``ids`` (decoded, or else the tokens joined by spaces)."""
    for text in (tokenizer.decode(ids), " ".join(tokenizer.convert_ids_to_tokens(ids))):
        if tokenizer(text, add_special_tokens=False)["input_ids"] == ids:
            return text
    return tokenizer.decode(ids)


def run_engine(backend, histories: list[np.ndarray], prompts: list[str], n: int, gen_tokens: int) -> dict:
    """Warm-up on two users, then timed beam search over all users and greedy generation over all prompts."""
    t0 = time.perf_counter()
    backend.beam_candidates(histories[:2], n)
    backend.generate(prompts[:2], 4)
    warmup = time.perf_counter() - t0
    t0 = time.perf_counter()
    lists = backend.beam_candidates(histories, n)
    beam_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    texts = backend.generate(prompts, gen_tokens, exact_length=True)  # every prompt gets exactly gen_tokens tokens
    gen_s = time.perf_counter() - t0
    new_tokens = len(prompts) * gen_tokens
    return {"warmup_s": warmup, "beam_s": beam_s, "lists_per_s": len(histories) / beam_s, "gen_s": gen_s,
            "gen_tokens": new_tokens, "tokens_per_s": new_tokens / gen_s, "lists": lists, "texts": texts}


def agreement(a: list, b: list, n: int) -> dict:
    """Fraction of users whose top-10 item lists are identical, and the mean |top-n(a) & top-n(b)| / n."""
    same10 = np.mean([np.array_equal(x.items[:10], y.items[:10]) for x, y in zip(a, b)])  # (users,) -> scalar
    overlap = np.mean([len(set(x.items[:n].tolist()) & set(y.items[:n].tolist())) / n for x, y in zip(a, b)])
    return {"top10_identical": float(same10), f"overlap@{n}": float(overlap)}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--checkpoint", default="runs/llm_tiny", help="checkpoint folder (default: runs/llm_tiny)")
    p.add_argument("--users", type=int, default=200, help="first K test users (default: 200)")
    p.add_argument("--n", type=int, default=100, help="beams = candidates per user (default: 100)")
    p.add_argument("--gen-tokens", type=int, default=32, help="new tokens per greedy generation, exactly (end of "
                   "sequence is banned until then; default: 32)")
    p.add_argument("--batch-size", type=int, default=8, help="transformers beam-search batch (default: 8)")
    p.add_argument("--json", type=Path, help="also write the numbers to this JSON file")
    args = p.parse_args(argv)
    threads = int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1))
    # vLLM's CPU worker binds its own OpenMP threads (all cores by default): give it as many as transformers gets
    for key, value in {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
                       "VLLM_CPU_OMP_THREADS_BIND": f"0-{threads - 1}"}.items():
        os.environ.setdefault(key, value)

    from llm_cloud.backends.transformers_backend import TransformersBackend
    from llm_cloud.backends.vllm_backend import VLLMBackend
    from llm_cloud.generative.checkpoint import load_artifact
    from llm_cloud.generative.decode import prompt_ids

    art = load_artifact(args.checkpoint)
    histories = load_histories(art, args.users)
    # generation prompts keep as many recent items as leave room for gen_tokens within the trained context
    room = art.fmt.max_length(art.max_items) - 1 - args.gen_tokens - len(art.fmt.prefix)
    gen_items = max(1, room // art.fmt.max_item_tokens)
    prompts = [prompt_text(art.tokenizer, ids) for ids in prompt_ids(art.fmt, histories, gen_items)]

    results, init = {}, {}
    t0 = time.perf_counter()
    hf = TransformersBackend(art, batch_size=args.batch_size)
    init["transformers"] = time.perf_counter() - t0
    results["transformers"] = run_engine(hf, histories, prompts, args.n, args.gen_tokens)
    del hf
    t0 = time.perf_counter()
    vl = VLLMBackend(art)
    init["vllm"] = time.perf_counter() - t0
    try:
        results["vllm"] = run_engine(vl, histories, prompts, args.n, args.gen_tokens)
    finally:
        vl.close()

    agree = agreement(results["vllm"]["lists"], results["transformers"]["lists"], args.n)
    agree["greedy_text_identical"] = float(np.mean([a == b for a, b in zip(results["vllm"]["texts"],
                                                                           results["transformers"]["texts"])]))
    print(f"checkpoint {args.checkpoint}, {len(histories)} users, n={args.n}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
          f"VLLM_CPU_OMP_THREADS_BIND={os.environ['VLLM_CPU_OMP_THREADS_BIND']}")
    print(f"{'engine':<13}{'init s':>8}{'warm-up s':>11}{'lists/s':>10}{'gen tok/s':>11}")
    for name, r in results.items():
        print(f"{name:<13}{init[name]:>8.1f}{r['warmup_s']:>11.1f}{r['lists_per_s']:>10.2f}{r['tokens_per_s']:>11.1f}")
    ratio = {k: results["vllm"][k] / results["transformers"][k] for k in ("lists_per_s", "tokens_per_s")}
    print(f"{'vllm/transf.':<13}{'':>8}{'':>11}{ratio['lists_per_s']:>10.2f}{ratio['tokens_per_s']:>11.2f}")
    print("agreement: " + ", ".join(f"{k} {v:.3f}" for k, v in agree.items()))
    summary = {"checkpoint": str(args.checkpoint), "users": len(histories), "n": args.n, "init_s": init,
               "engines": {k: {m: v for m, v in r.items() if m not in ("lists", "texts")} for k, r in results.items()},
               "ratio_vllm_over_transformers": ratio, "agreement": agree}
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
