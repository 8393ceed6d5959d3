"""Load benchmark: 200 concurrent `POST /v1/recommend` requests against `tandem serve` on 127.0.0.1.

For each backend (transformers always; vLLM when a Python with the [vllm] extra is given), the script starts a real
server on a free port with the given artifact store, waits for /readyz, warms it with one request, then sends
``--requests`` requests at once (distinct users, so every one needs a fresh LLM candidate list unless --repeat-users)
and reports errors, latency percentiles and requests/s. Run from the repository root:

    python -m bench.service_load --artifacts ~/.cache/tandem/artifacts/ml-100k-tiny [--vllm-python PY]
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


def start_server(python: str, artifacts: str, backend: str, port: int, threads: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TQDM_DISABLE": "1"}
    cmd = [python, "-m", "pipelines", "serve", "--artifacts", artifacts, "--port", str(port), "--backend", backend,
           "--threads", str(threads)]
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

        async def one(body: dict) -> tuple[float, int]:
            t0 = time.perf_counter()
            try:
                resp = await client.post("/v1/recommend", json=body)
                status = resp.status_code
            except httpx.HTTPError:
                status = -1
            return 1000 * (time.perf_counter() - t0), status

        t0 = time.perf_counter()
        results = await asyncio.gather(*(one(b) for b in bodies))
        wall = time.perf_counter() - t0
    return [r[0] for r in results], [r[1] for r in results], wall


def run_backend(python: str, backend: str, args: argparse.Namespace) -> dict:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = Path(args.log_dir) / f"service_load_{backend}.log"
    proc = start_server(python, args.artifacts, backend, port, args.threads, log)
    try:
        startup = wait_ready(url, proc)
        httpx.post(url + "/v1/recommend", json={"user_id": 0, "k": 10}, timeout=600)  # warm-up
        users = [0] * args.requests if args.repeat_users else list(range(1, args.requests + 1))
        lat, status, wall = asyncio.run(fire(url, [{"user_id": u, "k": 10} for u in users]))
        metrics = httpx.get(url + "/metrics", timeout=10).text
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    errors = sum(s != 200 for s in status)
    return {"backend": backend, "requests": len(lat), "errors": errors, "statuses": sorted(set(status)),
            "startup_s": round(startup, 1), "wall_s": round(wall, 2), "requests_per_s": len(lat) / wall,
            "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)),
            "max_ms": float(np.max(lat)), "cache_lines": [ln for ln in metrics.splitlines()
                                                          if "cache" in ln and not ln.startswith("#")][:4]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--artifacts", required=True, help="artifact store of `tandem build`")
    p.add_argument("--requests", type=int, default=200, help="concurrent requests (default 200)")
    p.add_argument("--threads", type=int, default=2, help="server torch threads (default 2)")
    p.add_argument("--repeat-users", action="store_true", help="all requests for one user (cache hits)")
    p.add_argument("--vllm-python", help="python of a venv with the [vllm] extra; adds the vLLM backend")
    p.add_argument("--log-dir", default="runs", help="server logs go here")
    p.add_argument("--json", help="write the results as JSON")
    args = p.parse_args()
    Path(args.log_dir).mkdir(parents=True, exist_ok=True)
    runs = [run_backend(sys.executable, "transformers", args)]
    if args.vllm_python:
        runs.append(run_backend(args.vllm_python, "vllm", args))
    who = "one user" if args.repeat_users else "distinct users"
    print(f"{args.requests} concurrent /v1/recommend requests ({who})")
    print(f"{'backend':<14}{'errors':>7}{'req/s':>9}{'p50 ms':>10}{'p99 ms':>10}{'start s':>9}")
    for r in runs:
        print(f"{r['backend']:<14}{r['errors']:>7}{r['requests_per_s']:>9.2f}{r['p50_ms']:>10.0f}{r['p99_ms']:>10.0f}"
              f"{r['startup_s']:>9.1f}")
    if len(runs) == 2:
        print(f"vLLM / transformers requests/s: {runs[1]['requests_per_s'] / runs[0]['requests_per_s']:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(runs, indent=2))


if __name__ == "__main__":
    main()
