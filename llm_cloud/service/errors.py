"""The service's errors: one exception type that carries the HTTP status and the fields of the one error shape
``{"error": {"message", "type", "param", "code"}}`` (:class:`tandem.protocol.ErrorResponse`).

The handlers (:mod:`llm_cloud.service.serving`) raise these without knowing about FastAPI; the app turns them into
responses. Nothing here imports a web framework.
"""

from __future__ import annotations

from tandem.protocol import ErrorBody, ErrorResponse


class ServiceError(Exception):
    """An error answered as ``status`` in the error shape."""

    status: int = 500
    type: str = "internal_error"

    def __init__(self, message: str, param: str | None = None, status: int | None = None,
                 type: str | None = None) -> None:  # noqa: A002 - the field is called `type` on the wire
        super().__init__(message)
        self.message = message
        self.param = param
        if status is not None:
            self.status = status
        if type is not None:
            self.type = type

    def payload(self) -> dict:
        return error_payload(self.status, self.message, self.type, self.param)

    def headers(self) -> dict[str, str] | None:
        """Extra response headers (``Retry-After`` on 429)."""
        return None


class BadRequest(ServiceError):
    status, type = 400, "invalid_request_error"


class Unauthorized(ServiceError):
    status, type = 401, "authentication_error"


class NotFound(ServiceError):
    status, type = 404, "not_found_error"


class PayloadTooLarge(ServiceError):
    status, type = 413, "request_too_large"


class InvalidInput(ServiceError):
    status, type = 422, "invalid_request_error"


class FeatureNotEnabled(ServiceError):
    """A valid request for a feature this server was not started with (the client's choice on this server, so a
    4xx; the message says how to get the feature)."""

    status, type = 400, "feature_not_enabled"


class Unavailable(ServiceError):
    status, type = 503, "service_unavailable"


class Overloaded(ServiceError):
    """A bounded queue is full: the client should retry after ``retry_after`` seconds (429 with ``Retry-After``)."""

    status, type = 429, "rate_limit_error"

    def __init__(self, message: str, retry_after: int = 1, param: str | None = None) -> None:
        super().__init__(message, param=param)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


def error_payload(status: int, message: str, type: str, param: str | None = None) -> dict:  # noqa: A002
    """The JSON body of every error answer."""
    return ErrorResponse(error=ErrorBody(message=message, type=type, param=param, code=status)).model_dump()


def validation_param(loc: tuple | list, message: str) -> str | None:
    """The request field a pydantic error is about: ``("body", "k")`` -> ``"k"``; model-level rules name theirs."""
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    if parts:
        return ".".join(parts)
    if "user_id and history" in message:
        return "user_id"
    return "body" if loc and loc[0] == "body" else None
