"""Device rerank latency: the SRM with a generated head in torch against the exported ONNX graph in onnxruntime.

One call = one user: numpy history (the last max_len items) and candidate ids in, numpy scores out, with generated
head parameters plugged in (random ones, of the rank the parameter generator would send). Both paths run on one CPU
thread (torch under ``no_grad``; onnxruntime with one intra-op thread), after a warm-up, over the same inputs.
With ``--paramgen DIR`` the hypernetwork's forward pass (recent items -> head parameters, one user) is timed too.

Without ``--srm`` the SRM is an untrained SASRec of ML-100K's size (1,682 items, hidden 64, 2 layers, max_len 50):
latency does not depend on the weights.

    OMP_NUM_THREADS=1 python bench/device_latency.py [--srm DIR] [--paramgen DIR] [--calls 500] [--json FILE]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from srm_device.head import HeadParams  # noqa: E402
from srm_device.models import SequentialRecommender, build_model, default_config  # noqa: E402
from srm_device.onnx_export import export_onnx  # noqa: E402
from srm_device.onnx_runtime import OnnxReranker  # noqa: E402
from srm_device.scoring import score_history  # noqa: E402
from tandem.io import atomic_write_json  # noqa: E402

ML100K_ITEMS = 1682


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--srm", metavar="DIR", help="SRM checkpoint (default: untrained SASRec of ML-100K's size)")
    p.add_argument("--paramgen", metavar="DIR", help="parameter generator folder: also time its forward pass")
    p.add_argument("--rank", type=int, default=8, help="head rank (default: 8, or the parameter generator's)")
    p.add_argument("--n-candidates", type=int, default=100, help="candidates per call (default: 100)")
    p.add_argument("--history", type=int, default=50, help="history length per call (default: 50)")
    p.add_argument("--calls", type=int, default=500, help="timed calls per path (default: 500)")
    p.add_argument("--warmup", type=int, default=50, help="untimed calls first (default: 50)")
    p.add_argument("--threads", type=int, default=1, help="torch threads and onnxruntime intra-op threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="FILE", help="write the numbers as JSON")
    return p.parse_args(argv)


def load_srm(folder: str | None) -> SequentialRecommender:
    if folder:
        from srm_device.training.checkpoint import load_checkpoint

        return load_checkpoint(folder)[0]
    cfg = default_config("sasrec", hidden_size=64, n_layers=2, n_heads=2, inner_size=256, max_len=50)
    return build_model("sasrec", ML100K_ITEMS, cfg).eval()


def time_calls(fn: Callable[[int], object], calls: int, warmup: int) -> np.ndarray:
    """Milliseconds of each of ``calls`` calls fn(i), after ``warmup`` untimed ones."""
    for i in range(warmup):
        fn(i)
    out = np.empty(calls)
    for i in range(calls):
        start = time.perf_counter_ns()
        fn(i)
        out[i] = (time.perf_counter_ns() - start) / 1e6
    return out


def summary(ms: np.ndarray) -> dict[str, float]:
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "mean_ms": float(ms.mean()), "calls": int(ms.size)}


def paramgen_timing(folder: str, n_items: int, calls: int, warmup: int, rng: np.random.Generator):
    """(timings, rank) of one-user hypernetwork forwards."""
    from llm_cloud.paramgen.checkpoint import load_paramgen
    from srm_device.scoring import recent_window

    gen, _, meta = load_paramgen(folder)
    k = meta["paramgen_config"]["recent_k"]
    hi = min(n_items, meta["n_items"])
    recents = [torch.tensor([recent_window(rng.integers(1, hi + 1, size=k), k)]) for _ in range(64)]  # (1, k) each

    @torch.no_grad()
    def forward(i: int) -> HeadParams:
        a, b, bias = gen.split(gen(recents[i % len(recents)]))  # (1, d, r), (1, d, r), (1, d)
        return HeadParams(a[0], b[0], bias[0])

    return time_calls(forward, calls, warmup), int(meta["rank"])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    model = load_srm(args.srm)
    cfg = model.config
    results: dict = {}
    rank = args.rank
    if args.paramgen:
        ms, rank = paramgen_timing(args.paramgen, model.n_items, args.calls, args.warmup, rng)
        results["paramgen forward"] = summary(ms)
    d = cfg.hidden_size
    head = HeadParams(0.1 * torch.randn(d, rank), 0.1 * torch.randn(d, rank), 0.1 * torch.randn(d))
    inputs = [(rng.integers(1, model.n_items + 1, size=args.history),
               rng.choice(np.arange(1, model.n_items + 1), size=args.n_candidates, replace=False)) for _ in range(64)]

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        path = export_onnx(model, Path(tmp) / "srm.onnx", rank)
        export_s = time.perf_counter() - start
        size_mb = path.stat().st_size / 1e6
        rr = OnnxReranker(path, threads=args.threads)
        worst = max(float(np.abs(rr.scores(h, c, head) - score_history(model, h, c, head)).max()) for h, c in inputs)
        results["torch"] = summary(time_calls(lambda i: score_history(model, *inputs[i % 64], head),
                                              args.calls, args.warmup))
        results["onnxruntime"] = summary(time_calls(lambda i: rr.scores(*inputs[i % 64], head),
                                                    args.calls, args.warmup))

    ratio = {k: results["torch"][k] / results["onnxruntime"][k] for k in ("p50_ms", "p99_ms")}
    print(f"{model.name}: {model.n_items} items, hidden {d}, {cfg.n_layers} layers, max_len {cfg.max_len}; "
          f"history {args.history}, {args.n_candidates} candidates, head rank {rank}, {args.threads} thread(s), "
          f"{args.calls} calls after {args.warmup} warm-up")
    print(f"ONNX file {size_mb:.2f} MB, exported in {export_s:.1f}s; max |onnx - torch| = {worst:.1e}")
    print(f"{'':<22}{'p50 ms':>9}{'p99 ms':>9}{'mean ms':>9}")
    for name in ("torch", "onnxruntime", "paramgen forward"):
        if name in results:
            r = results[name]
            print(f"{name:<22}{r['p50_ms']:>9.3f}{r['p99_ms']:>9.3f}{r['mean_ms']:>9.3f}")
    print(f"{'torch / onnxruntime':<22}{ratio['p50_ms']:>8.2f}x{ratio['p99_ms']:>8.2f}x")
    if args.json:
        import onnxruntime

        atomic_write_json(args.json, {
            "model": model.name, "n_items": model.n_items, "model_config": cfg.to_dict(), "rank": rank,
            "history": args.history, "n_candidates": args.n_candidates, "threads": args.threads,
            "calls": args.calls, "warmup": args.warmup, "onnx_mb": size_mb, "export_s": export_s,
            "max_abs_diff": worst, "latency": results, "torch_over_onnxruntime": ratio,
            "versions": {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__},
            "machine": {"cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                        "omp_num_threads": os.environ.get("OMP_NUM_THREADS")},
        })
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
