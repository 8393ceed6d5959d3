"""Device simulation over real HTTP: replay the test users as device sessions against a running Tandem server.

Each test user is one device (LSC4Rec's setting, arXiv 2502.08667). The session starts ``staleness`` items before the
end of the user's history: the device asks the cloud for a candidate list then. The user then interacts ``staleness``
more times; the device observes them, refreshes its generated head parameters (a Persona prototype id and an edit),
and must recommend: its request policy decides from the fresh SRM view of the now stale list whether to ask the
cloud again. The recommendation is scored against the user's test item. A cloud that errors or misses the deadline
gives a degraded answer (the device ranks what it has), which is counted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import httpx
import numpy as np
from tqdm.auto import tqdm

from eval.metrics import metrics_from_ranks
from pipelines.thresholds import first_users
from srm_device.adaptation import make_method
from srm_device.client import HTTPCloudClient
from srm_device.fusion import FusionParams, Platt
from srm_device.policies import POLICIES, Threshold, make_policy
from srm_device.session import DeviceSession
from srm_device.training.checkpoint import load_srm_with_data
from tandem.artifacts import Store
from tandem.data.split import leave_one_out
from tandem.errors import TandemError

MISS = 10**9


@dataclass
class SimulateConfig:
    policy: str = "lsc4rec"
    request_ratio: float = 0.2
    max_users: int | None = None
    timeout_s: float = 10.0
    k: int = 10


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    arr = np.asarray(values)
    return {"n": len(arr), "p50": float(np.percentile(arr, 50)), "p99": float(np.percentile(arr, 99)),
            "mean": float(arr.mean())}


def device_session_factory(store: Store, cfg: SimulateConfig):
    """(make_session(client) -> DeviceSession, dataset, staleness) from the store's device side."""
    th = store.read_thresholds()
    if cfg.policy not in POLICIES:
        raise TandemError(f"--policy {cfg.policy!r} is not a request policy; use one of {', '.join(sorted(POLICIES))}")
    fitted = th.thresholds.get(cfg.policy, {})
    key = f"{cfg.request_ratio:g}"
    if key not in fitted:
        raise TandemError(f"--request-ratio {cfg.request_ratio:g} was not calibrated for {cfg.policy}; use one of "
                          f"{', '.join(sorted(fitted, key=float))} (or rebuild with --request-ratio)")
    fit = fitted[key]
    srm, _, ds = load_srm_with_data(store.collab_srm if th.srm == "collab" else store.srm)
    pg_meta = json.loads((store.paramgen / "config.json").read_text())
    method = make_method("duet_head", srm, rank=int(pg_meta["rank"]))
    prm = FusionParams(Platt(*th.srm_platt), Platt(*th.llm_platt), th.alpha)
    policy = make_policy(cfg.policy)

    def make(client) -> DeviceSession:
        return DeviceSession(srm, method, policy, Threshold(fit.tau, fit.p_tie, fit.ratio), client, fusion=th.fusion,
                             fusion_params=prm, n_candidates=th.n_candidates, recent_k=th.recent_k,
                             timeout_s=cfg.timeout_s)

    return make, ds, th.staleness


def simulate(server: str, store: Store, cfg: SimulateConfig, api_key: str | None = None,
             progress: bool | None = None) -> dict:
    make, ds, staleness = device_session_factory(store, cfg)
    try:
        ready = httpx.get(server.rstrip("/") + "/readyz", timeout=10)
    except httpx.HTTPError as exc:
        raise TandemError(f"--server {server} is not reachable ({exc}); start it with `tandem serve`") from None
    if ready.status_code != 200:
        raise TandemError(f"--server {server} is not ready: {ready.text[:200]}")
    test = first_users(leave_one_out(ds.sequences).test, cfg.max_users)
    client = HTTPCloudClient(server, api_key=api_key, timeout_s=max(cfg.timeout_s * 2, 30.0))
    ranks, requested, degraded, param_updates, policy_bytes = [], [], [], 0, 0
    try:
        for hist, target in tqdm(list(zip(test.histories, test.targets)), desc="devices", disable=progress is False):
            session = make(client)
            cut = max(1, len(hist) - staleness)
            session.history = [int(i) for i in hist[:cut]]
            first = session.recommend(cfg.k)  # session start: nothing cached, so it asks
            for item in hist[cut:]:
                session.observe(int(item))
            param_updates += session.refresh_parameters()
            before = client.traffic.bytes_up + client.traffic.bytes_down
            rec = session.recommend(cfg.k)
            policy_bytes += client.traffic.bytes_up + client.traffic.bytes_down - before
            session.close()
            ranks.append(rec.items.index(int(target)) if int(target) in rec.items else MISS)
            requested.append(rec.requested)
            degraded.append(rec.degraded or first.degraded)
    finally:
        client.close()
    n = len(ranks)
    traffic = client.traffic
    return {
        "metrics": metrics_from_ranks(np.asarray(ranks), ks=(5, 10)),
        "policy": cfg.policy, "target_request_ratio": cfg.request_ratio,
        "request_ratio": float(np.mean(requested)), "degraded_users": int(np.sum(degraded)),
        "parameter_updates_applied": int(param_updates), "n_users": n, "staleness": staleness,
        "bytes_per_user": {"up": traffic.bytes_up / n, "down": traffic.bytes_down / n,
                           "policy_requests": policy_bytes / n},
        "calls": traffic.calls,
        "latency_ms": {route: _percentiles(v) for route, v in traffic.latency_ms.items()},
        "server": server,
    }

