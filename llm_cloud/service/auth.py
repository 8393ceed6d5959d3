"""Optional API keys for the ``/v1`` routes.

When ``TANDEM_API_KEYS`` (comma-separated) is set, a request must carry one of the keys as ``Authorization: Bearer KEY``
or ``X-API-Key: KEY``; otherwise it gets a 401 in the error shape. Health, readiness, metrics and the docs stay open.
Keys are compared in constant time.
"""

from __future__ import annotations

import hmac
import os

from llm_cloud.service.errors import Unauthorized

ENV_VAR = "TANDEM_API_KEYS"


def keys_from_env(environ: dict | None = None) -> tuple[str, ...]:
    """The configured keys (empty: no authentication)."""
    raw = (environ if environ is not None else os.environ).get(ENV_VAR, "")
    return tuple(k.strip() for k in raw.split(",") if k.strip())


def presented_key(headers) -> str | None:
    """The key a request presents, from ``Authorization: Bearer`` or ``X-API-Key``."""
    auth = headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return headers.get("x-api-key") or None


def check_key(keys: tuple[str, ...], headers) -> None:
    """Raise :class:`Unauthorized` unless ``keys`` is empty or the request presents one of them."""
    if not keys:
        return
    key = presented_key(headers)
    if key is None:
        raise Unauthorized("missing API key: send `Authorization: Bearer KEY` or `X-API-Key: KEY`",
                           param="Authorization")
    if not any(hmac.compare_digest(key.encode(), k.encode()) for k in keys):
        raise Unauthorized("invalid API key", param="Authorization")
