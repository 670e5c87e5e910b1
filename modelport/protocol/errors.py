"""The one error family: every failure a client can see, with its HTTP status and OpenAI error type."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ErrorBody(BaseModel):
    """An error as it travels between processes and as it is rendered to clients."""

    status: int
    type: str
    code: str | None = None
    message: str
    param: str | None = None
    retry_after: int | None = None
    headers: dict[str, str] = Field(default_factory=dict)

    def envelope(self) -> dict[str, object]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class ModelPortError(Exception):
    """Base of every error ModelPort raises on purpose; subclasses fix status and type."""

    status = 500
    type = "server_error"
    default_code: str | None = None

    def __init__(
        self, message: str, *, code: str | None = None, param: str | None = None, retry_after: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code if code is not None else self.default_code
        self.param = param
        self.retry_after = retry_after
        self.headers = headers or {}

    def body(self) -> ErrorBody:
        return ErrorBody(
            status=self.status,
            type=self.type,
            code=self.code,
            message=self.message,
            param=self.param,
            retry_after=self.retry_after,
            headers=self.headers,
        )


class InvalidRequest(ModelPortError):
    status = 400
    type = "invalid_request_error"


class ContextLengthExceeded(InvalidRequest):
    default_code = "context_length_exceeded"


class AuthenticationFailed(ModelPortError):
    status = 401
    type = "authentication_error"
    default_code = "invalid_api_key"


class PermissionDenied(ModelPortError):
    status = 403
    type = "permission_error"
    default_code = "model_not_permitted"


class NotFound(ModelPortError):
    status = 404
    type = "invalid_request_error"
    default_code = "not_found"


class RequestTimeout(ModelPortError):
    status = 408
    type = "invalid_request_error"
    default_code = "request_timeout"


class PayloadTooLarge(ModelPortError):
    status = 413
    type = "invalid_request_error"
    default_code = "request_too_large"


class Cancelled(ModelPortError):
    """The client went away or aborted; never rendered, but recorded."""

    status = 499
    type = "cancelled"
    default_code = "client_cancelled"


class RateLimited(ModelPortError):
    status = 429
    type = "rate_limit_error"
    default_code = "rate_limit_exceeded"


class QuotaExceeded(RateLimited):
    """A budget is spent (OpenAI's answer when an account's quota is)."""

    type = "insufficient_quota"
    default_code = "insufficient_quota"


class UpstreamError(ModelPortError):
    status = 502
    type = "upstream_error"
    default_code = "upstream_error"


class Unavailable(ModelPortError):
    status = 503
    type = "service_unavailable"
    default_code = "unavailable"


class NoWorker(Unavailable):
    default_code = "no_worker"


class DeadlineExceeded(ModelPortError):
    status = 504
    type = "timeout_error"
    default_code = "deadline_exceeded"
