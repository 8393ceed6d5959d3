"""Load benchmark: 200 concurrent `POST /v1/recommend` requests against `tandem serve` on 127.0.0.1, micro-batching on
and off in one run.

Each arm starts a real server on a free port with the given artifact store, waits for /readyz, warms it with one
request, then sends ``--requests`` requests at once (distinct users, so every one needs a fresh LLM candidate list
unless --repeat-users) and reports errors, degraded answers, latency percentiles, requests/s and the batch sizes the
server reports. The arms: ``batched`` (the server's defaults) and ``batch1`` (``--max-batch 1``: one list per beam
search, as before micro-batching) and ``in_process`` (batched, the search on a thread of the server process instead
of its own process); with ``--vllm-python`` also ``vllm`` (batched, vLLM backend); with ``--ray-replicas 1 2`` also
``ray_1`` and ``ray_2`` (`tandem serve --engine ray`, one CPU per replica; ``/metrics`` then describes one replica).
The deadline is set far out in every arm, so the numbers measure throughput rather than the deadline. Run from the
repository root:

    python -m bench.service_load --artifacts ~/.cache/tandem/artifacts/ml-100k-tiny [--json OUT]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(python: str, artifacts: str, backend: str, port: int, threads: int, log: Path,
                 extra: list[str]) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TQDM_DISABLE": "1"}
    cmd = [python, "-m", "pipelines", "serve", "--artifacts", artifacts, "--port", str(port), "--backend", backend,
           "--threads", str(threads), "--log-level", "warning", "--deadline-ms", "3600000", *extra]
    return subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env)  # noqa: SIM115


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 600) -> float:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return time.perf_counter() - t0
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError("server not ready")


async def fire(url: str, bodies: list[dict]) -> tuple[list[float], list[int], float]:
    limits = httpx.Limits(max_connections=len(bodies))
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:

        async def one(body: dict) -> tuple[float, int, dict | None]:
            t0 = time.perf_counter()
            answer = None
            try:
                resp = await client.post("/v1/recommend", json=body)
                status = resp.status_code
                answer = resp.json() if status == 200 else None
            except httpx.HTTPError:
                status = -1
            return 1000 * (time.perf_counter() - t0), status, answer

        t0 = time.perf_counter()
        results = await asyncio.gather(*(one(b) for b in bodies))
        wall = time.perf_counter() - t0
    return [r[0] for r in results], [r[1] for r in results], [r[2] for r in results if r[2]], wall


def isolated_search(artifacts: str, threads: int, users: int = 64) -> dict[int, float]:
    """Lists/s of the store's LLM search alone, in this process's main thread, by batch size: the ceiling of the
    service's fresh-list throughput (n = 100, the first ``users`` users)."""
    import torch

    from llm_cloud.service.stack import load_stack

    torch.set_num_threads(threads)
    stack = load_stack(artifacts)
    try:
        histories = [np.asarray(seq[:-1]) for seq in stack.dataset.sequences[1:users + 1]]
        stack.backend.beam_candidates(histories[:2], 100)  # warm-up
        out = {}
        for size in (1, 8, 32):
            t0 = time.perf_counter()
            for i in range(0, users, size):
                stack.backend.beam_candidates(histories[i:i + size], 100)
            out[size] = users / (time.perf_counter() - t0)
        return out
    finally:
        stack.close()


def metric(text: str, name: str) -> float:
    return sum(float(ln.split()[-1]) for ln in text.splitlines() if ln.startswith(name + " "))


def run_arm(name: str, python: str, backend: str, extra: list[str], args: argparse.Namespace) -> dict:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = Path(args.log_dir) / f"service_load_{name}.log"
    extra = [*args.server_args.split(), *extra]
    proc = start_server(python, args.artifacts, backend, port, args.threads, log, extra)
    try:
        startup = wait_ready(url, proc)
        httpx.post(url + "/v1/recommend", json={"user_id": 0, "k": 10}, timeout=600)  # warm-up
        before = httpx.get(url + "/metrics", timeout=10).text
        users = [0] * args.requests if args.repeat_users else list(range(1, args.requests + 1))
        lat, status, answers, wall = asyncio.run(fire(url, [{"user_id": u, "k": 10} for u in users]))
        after = httpx.get(url + "/metrics", timeout=10).text
    finally:
        proc.terminate()
        proc.wait(timeout=60)

    def delta(name: str) -> float:
        return metric(after, name) - metric(before, name)

    searches = delta("tandem_llm_batch_size_count")
    stages = {k: float(np.mean([a["timings_ms"].get(k, 0.0) for a in answers])) if answers else 0.0
              for k in ("parameters", "srm", "llm", "fusion", "total")}
    return {"backend": backend, "server_flags": extra, "requests": len(lat), "errors": sum(s != 200 for s in status),
            "degraded": sum(a["decision"]["degraded"] for a in answers), "statuses": sorted(set(status)),
            "startup_s": round(startup, 1), "wall_s": round(wall, 2), "requests_per_s": len(lat) / wall,
            "p50_s": float(np.percentile(lat, 50)) / 1e3, "p99_s": float(np.percentile(lat, 99)) / 1e3,
            "max_s": float(np.max(lat)) / 1e3, "searches": int(searches),
            "mean_batch": delta("tandem_llm_batch_size_sum") / searches if searches else 0.0,
            "search_seconds": delta("tandem_llm_batch_seconds_sum"),
            "mean_queue_wait_s": delta("tandem_llm_queue_wait_seconds_sum") / max(1.0, delta(
                "tandem_llm_queue_wait_seconds_count")),
            "mean_stage_ms": stages}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--artifacts", required=True, help="artifact store of `tandem build`")
    p.add_argument("--requests", type=int, default=200, help="concurrent requests (default 200)")
    p.add_argument("--threads", type=int, default=2, help="server torch threads (default 2)")
    p.add_argument("--repeat-users", action="store_true", help="all requests for one user (cache hits)")
    p.add_argument("--vllm-python", help="python of a venv with the [vllm] extra; adds the vLLM backend")
    p.add_argument("--log-dir", default="runs", help="server logs go here")
    p.add_argument("--server-args", default="", help="more `tandem serve` flags for every arm, e.g. '--llm-threads 2'")
    p.add_argument("--ray-replicas", type=int, nargs="*", default=[],
                   help="also Ray Serve arms with these replica counts (this python needs the [ray] extra)")
    p.add_argument("--json", help="write the results as JSON")
    args = p.parse_args()
    Path(args.log_dir).mkdir(parents=True, exist_ok=True)
    ceiling = isolated_search(args.artifacts, args.threads)
    runs = {"batched": run_arm("batched", sys.executable, "transformers", [], args),
            "batch1": run_arm("batch1", sys.executable, "transformers", ["--max-batch", "1"], args),
            "in_process": run_arm("in_process", sys.executable, "transformers", ["--no-llm-process"], args)}
    if args.vllm_python:
        runs["vllm"] = run_arm("vllm", args.vllm_python, "vllm", [], args)
    for n in args.ray_replicas:  # one CPU per replica, so that N replicas fit N cores
        runs[f"ray_{n}"] = run_arm(f"ray_{n}", sys.executable, "transformers",
                                   ["--engine", "ray", "--replicas", str(n), "--threads", "1"], args)
    who = "one user" if args.repeat_users else "distinct users"
    print(f"{args.requests} concurrent /v1/recommend requests ({who}), server with {args.threads} threads")
    print(f"{'arm':<10}{'errors':>7}{'degraded':>9}{'req/s':>9}{'p50 s':>8}{'p99 s':>8}{'batch':>7}{'search s':>9}"
          f"{'start s':>9}")
    for name, r in runs.items():
        print(f"{name:<10}{r['errors']:>7}{r['degraded']:>9}{r['requests_per_s']:>9.2f}{r['p50_s']:>8.2f}"
              f"{r['p99_s']:>8.2f}{r['mean_batch']:>7.1f}{r['search_seconds']:>9.1f}{r['startup_s']:>9.1f}")
        print(f"{'':<10}mean ms per request by stage: "
              + ", ".join(f"{k} {v:.0f}" for k, v in r["mean_stage_ms"].items()))
    print("the search alone, lists/s by batch size: " + ", ".join(f"{k}: {v:.1f}" for k, v in ceiling.items()))
    runs["isolated_search_lists_per_s"] = ceiling
    b, one = runs["batched"], runs["batch1"]
    runs["ratios"] = {"requests_per_s": b["requests_per_s"] / one["requests_per_s"],
                      "p99": b["p99_s"] / one["p99_s"]}
    print(f"batched / batch1: {runs['ratios']['requests_per_s']:.2f}x the requests/s, "
          f"{runs['ratios']['p99']:.2f}x the p99")
    if len(args.ray_replicas) >= 2:
        lo, hi = min(args.ray_replicas), max(args.ray_replicas)
        runs["ratios"]["ray_scaling"] = runs[f"ray_{hi}"]["requests_per_s"] / runs[f"ray_{lo}"]["requests_per_s"]
        print(f"Ray Serve, {hi} replicas / {lo}: {runs['ratios']['ray_scaling']:.2f}x the requests/s")
    if args.json:
        Path(args.json).write_text(json.dumps(runs, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
