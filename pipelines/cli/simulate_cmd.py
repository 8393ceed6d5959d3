"""``tandem simulate``: replay the test users as device sessions over HTTP against a running Tandem server."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from pipelines.cli.common import add_parser, write_json
from tandem.errors import TandemError


def _simulate(args: argparse.Namespace) -> int:
    from pipelines.simulate import SimulateConfig, simulate
    from tandem.artifacts import Store, default_store

    if not 0 < args.request_ratio <= 1:
        raise TandemError(f"--request-ratio must be in (0, 1], got {args.request_ratio}")
    if args.max_users is not None and args.max_users < 1:
        raise TandemError(f"--max-users must be >= 1, got {args.max_users}")
    store = Store(Path(args.artifacts) if args.artifacts else default_store(args.dataset))
    cfg = SimulateConfig(policy=args.policy, request_ratio=args.request_ratio, max_users=args.max_users,
                         timeout_s=args.timeout)
    report = simulate(args.server, store, cfg, api_key=os.environ.get("TANDEM_API_KEY"))
    m = report["metrics"]
    print(f"{report['n_users']} devices against {args.server}: ndcg@10 {m['ndcg@10']:.4f}, hr@10 {m['hr@10']:.4f}; "
          f"request ratio {report['request_ratio']:.3f} (target {args.request_ratio:g}), degraded "
          f"{report['degraded_users']}")
    b = report["bytes_per_user"]
    print(f"bytes per user: up {b['up']:.0f}, down {b['down']:.0f} (policy-driven requests {b['policy_requests']:.0f})")
    for route, lat in report["latency_ms"].items():
        if lat.get("n"):
            print(f"{route:<26} n={lat['n']:<6} p50 {lat['p50']:.1f} ms  p99 {lat['p99']:.1f} ms")
    write_json(args.json, report)
    return 0


def register(sub) -> None:
    p = add_parser(sub, "simulate", "replay the test users as device sessions over real HTTP against a running "
                   "`tandem serve`: NDCG@10/HR@10, realised request ratio, bytes per user and latency", _simulate)
    p.add_argument("--server", required=True, metavar="URL", help="e.g. http://127.0.0.1:8000")
    p.add_argument("--dataset", default="ml-100k", help="dataset of the default artifact store (default: ml-100k)")
    p.add_argument("--artifacts", metavar="DIR", help="the store the server serves; the device side (SRM, "
                   "thresholds) is read from it (default: the embedded default store)")
    p.add_argument("--policy", default="lsc4rec", help="device request policy (default: lsc4rec)")
    p.add_argument("--request-ratio", type=float, default=0.2, help="target request ratio; must be one the build "
                   "calibrated (default 0.2)")
    p.add_argument("--max-users", type=int, metavar="N", help="replay the first N test users only")
    p.add_argument("--timeout", type=float, default=10.0, help="device deadline per cloud call in seconds; a late "
                   "answer gives a degraded (counted) recommendation (default 10)")
    p.add_argument("--json", metavar="FILE", help="write the report as JSON")
