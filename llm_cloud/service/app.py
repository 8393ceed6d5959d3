"""The FastAPI app: ``create_app(store_dir)``.

The handlers (:class:`~llm_cloud.service.serving.TandemServing`) are built in the lifespan and kept on ``app.state``.
The web page is served at ``/ui/`` (``/`` redirects there) from the static files in ``ui/``; it calls the same
``/v1`` routes as any client. If the store cannot be loaded the app still starts: ``/healthz`` answers, ``/readyz``
answers 503 with the reason, and ``/v1`` routes answer 503 in the error shape. Every error, whatever raised it,
leaves in the one shape ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import json
import logging
import threading
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from llm_cloud.service.auth import check_key, keys_from_env
from llm_cloud.service.errors import PayloadTooLarge, ServiceError, error_payload, validation_param
from llm_cloud.service.metrics import Metrics, MetricsMiddleware
from llm_cloud.service.queue_config import QueueConfig
from llm_cloud.service.routers import ops, v1
from llm_cloud.service.serving import TandemServing
from llm_cloud.service.stack import Stack, load_stack
from tandem import __version__
from tandem.protocol import MAX_BODY_BYTES

log = logging.getLogger("tandem.service")
UI_DIR = Path(__file__).with_name("ui")  # the web page: plain HTML, CSS and JavaScript, shipped in the package
STATUS_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
                405: "method_not_allowed", 413: "request_too_large", 422: "invalid_request_error",
                429: "rate_limit_error"}


def create_app(store_dir: str | Path | None = None, backend: str = "transformers", *, stack: Stack | None = None,
               threads: int | None = None, cache_size: int = 4096, api_keys: tuple[str, ...] | None = None,
               background_load: bool = False, backend_options: dict | None = None,
               queues: QueueConfig | None = None, llm_process=None) -> FastAPI:
    """The service over the store at ``store_dir`` (or an already loaded ``stack``).

    ``api_keys``: None reads ``TANDEM_API_KEYS`` now; an empty tuple turns authentication off. ``background_load``
    loads the store in a thread after startup (``/readyz`` says 503 until it is done) instead of before. ``queues``:
    micro-batching, queue bounds and the request deadline (:class:`QueueConfig`). ``llm_process``: an
    :class:`~llm_cloud.service.llm_process.LLMProcess` already started for the store; the app stops it on shutdown.
    """
    if stack is None and store_dir is None:
        raise ValueError("create_app needs store_dir or stack")
    if threads:
        import torch

        torch.set_num_threads(threads)
    metrics = Metrics()

    def load(app: FastAPI) -> None:
        try:
            loaded = stack or load_stack(store_dir, backend, **(backend_options or {}))
            app.state.serving = TandemServing(loaded, cache_size=cache_size, metrics=metrics, queues=queues,
                                              llm_process=llm_process)
        except Exception as exc:  # noqa: BLE001 - the reason goes to /readyz
            app.state.load_error = str(exc) or type(exc).__name__

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.serving, app.state.load_error = None, None
        if background_load:
            threading.Thread(target=load, args=(app,), name="tandem-load", daemon=True).start()
        else:
            await anyio.to_thread.run_sync(load, app)
        yield
        if app.state.serving is not None:
            app.state.serving.close()
            if stack is None:  # a stack passed in belongs to the caller
                app.state.serving.stack.close()

    app = FastAPI(title="Tandem", version=__version__, lifespan=lifespan,
                  description="Device–cloud collaborative recommendation: a cloud LLM proposes candidates, a small "
                              "sequential recommender reranks them (LSC4Rec, arXiv 2502.08667).")
    app.state.metrics = metrics
    app.state.serving, app.state.load_error = None, None
    app.include_router(ops)
    app.include_router(v1)
    app.mount("/ui", StaticFiles(directory=UI_DIR, html=True), name="ui")

    @app.get("/", include_in_schema=False)
    async def home() -> RedirectResponse:
        return RedirectResponse("/ui/")

    _install_error_handlers(app)
    app.add_middleware(GuardMiddleware, api_keys=keys_from_env() if api_keys is None else tuple(api_keys))
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # outermost: counts the guard's refusals too
    return app


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return JSONResponse(exc.payload(), status_code=exc.status, headers=exc.headers())

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request", "type": "?"}
        if first.get("type") == "json_invalid":
            ctx = first.get("ctx", {}).get("error", "")
            return JSONResponse(error_payload(400, f"malformed JSON body: {ctx}".rstrip(": "),
                                              "invalid_request_error", "body"), status_code=400)
        parts = []
        for err in errors:
            param = validation_param(err.get("loc", ()), str(err.get("msg", "")))
            msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
            parts.append(f"{param}: {msg}" if param and param != "body" else msg)
        param = validation_param(first.get("loc", ()), str(first.get("msg", "")))
        return JSONResponse(error_payload(422, "; ".join(parts), "invalid_request_error", param), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = STATUS_TYPES.get(exc.status_code, "internal_error" if exc.status_code >= 500 else "http_error")
        return JSONResponse(error_payload(exc.status_code, str(exc.detail), kind), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return JSONResponse(error_payload(500, f"internal error ({type(exc).__name__}); the server log has the "
                                               f"details", "internal_error"), status_code=500)


class GuardMiddleware:
    """Pure ASGI: API keys on ``/v1`` and the body limit (Content-Length, then the bytes actually sent), answered in
    the error shape before any routing or parsing."""

    def __init__(self, app, api_keys: tuple[str, ...] = ()) -> None:
        self.app = app
        self.api_keys = api_keys

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        try:
            if scope["path"].startswith("/v1"):
                check_key(self.api_keys, headers)
            declared = headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
                raise _too_large(int(declared))
            body, disconnected = await _read_body(receive)
        except ServiceError as exc:
            await _send_error(send, exc)
            return
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            if disconnected:
                return {"type": "http.disconnect"}
            return await receive()

        await self.app(scope, replay, send)


def _too_large(size: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"request body of {size} bytes is over the limit of {MAX_BODY_BYTES} bytes; send a "
                           f"shorter history", param="body")


async def _read_body(receive) -> tuple[bytes, bool]:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(chunks), True
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _too_large(size)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks), False


async def _send_error(send, exc: ServiceError) -> None:
    body = json.dumps(exc.payload()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if exc.status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
