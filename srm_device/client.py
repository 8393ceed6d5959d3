"""The device's HTTP client for the cloud (a :class:`srm_device.session.CloudClient`), speaking :mod:`tandem.protocol`.

It downloads the Persona codebook once and then asks for parameters as a prototype id plus edit coefficients
(Persona, arXiv 2509.06552), so an update costs a few bytes. It counts the bytes it sends and receives (HTTP bodies)
and the latency of every call, which the device simulation reports. Errors surface as exceptions; the session turns
them into degraded answers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import httpx
import numpy as np

from srm_device.persona import Codebook
from tandem.protocol import (
    DEVICE_METHODS,
    MAX_HISTORY,
    CandidatesRequest,
    CandidatesResponse,
    ParametersRequest,
    ParametersResponse,
)
from tandem.protocol import Codebook as CodebookMessage


class CloudError(RuntimeError):
    """The cloud answered with an error (its message is kept)."""


@dataclass
class Traffic:
    bytes_up: int = 0
    bytes_down: int = 0
    calls: dict[str, int] = field(default_factory=dict)
    latency_ms: dict[str, list[float]] = field(default_factory=dict)

    def add(self, route: str, up: int, down: int, ms: float) -> None:
        self.bytes_up += up
        self.bytes_down += down
        self.calls[route] = self.calls.get(route, 0) + 1
        self.latency_ms.setdefault(route, []).append(ms)


class HTTPCloudClient:
    """``method`` is the device method whose parameters it asks for: ``duet_head`` (head edit) or ``duet``
    (multi-layer edits); each has its own codebook."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout_s: float = 30.0,
                 client: httpx.Client | None = None, method: str = "duet_head") -> None:
        if method not in DEVICE_METHODS:
            raise ValueError(f"method must be one of {', '.join(DEVICE_METHODS)}, got {method!r}")
        self.method = method
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = client or httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout_s)
        self.traffic = Traffic()
        self._codebook: Codebook | None = None

    def _call(self, method: str, route: str, body: str | None = None) -> bytes:
        t0 = time.perf_counter()
        content = body.encode() if body is not None else None
        resp = self.http.request(method, route, content=content,
                                 headers={"content-type": "application/json"} if content else None)
        path = route.split("?")[0]  # traffic is counted per route, whatever the query
        self.traffic.add(path, len(content or b""), len(resp.content), 1000 * (time.perf_counter() - t0))
        if resp.status_code >= 400:
            try:
                message = resp.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = resp.text[:200]
            raise CloudError(f"{path}: HTTP {resp.status_code}: {message}")
        return resp.content

    def candidates(self, history: list[int], n: int) -> tuple[np.ndarray, np.ndarray]:
        """The cloud's list for the last MAX_HISTORY items (the protocol's limit; the LLM reads fewer anyway)."""
        body = CandidatesRequest(history=[int(i) for i in history[-MAX_HISTORY:]], n=n).model_dump_json()
        msg = CandidatesResponse.model_validate_json(self._call("POST", "/v1/candidates", body))
        return np.asarray(msg.items, dtype=np.int64), np.asarray(msg.scores, dtype=np.float64)

    def codebook(self) -> Codebook:
        if self._codebook is None:
            raw = self._call("GET", f"/v1/parameters/codebook?method={self.method}")
            msg = CodebookMessage.model_validate_json(raw)
            self._codebook = Codebook(np.asarray(msg.prototypes, dtype=np.float32),
                                      np.asarray(msg.basis, dtype=np.float32))
        return self._codebook

    def parameters(self, recent: list[int]) -> np.ndarray:
        book = self.codebook()
        body = ParametersRequest(recent=[int(i) for i in recent], method=self.method,
                                 encoding="prototype").model_dump_json()
        msg = ParametersResponse.model_validate_json(self._call("POST", "/v1/parameters", body))
        if msg.prototype is None or msg.coefs is None or msg.method != self.method:
            raise CloudError(f"/v1/parameters answered without a {self.method} prototype and coefficients")
        return book.decode(np.array([msg.prototype]), np.asarray([msg.coefs], dtype=np.float32))[0]  # (p,)

    def close(self) -> None:
        self.http.close()
