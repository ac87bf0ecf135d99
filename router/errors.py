"""One error family for everything the gateway refuses or fails on.

Every refusal is raised as a :class:`GatewayError` subclass deep in the code and turned into
OpenAI's error body at exactly one place (the app's exception handler), so that a client
always receives ``{"error": {"message", "type", "param", "code"}}`` with a specific ``code``.
"""

from __future__ import annotations

from typing import Any


class GatewayError(Exception):
    """Base of the family. ``status`` is the HTTP status, ``code`` the stable machine name."""

    status: int = 500
    code: str = "internal_error"
    type: str = "api_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.param = param
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequest(GatewayError):
    status = 400
    code = "invalid_request"
    type = "invalid_request_error"


class InvalidJson(InvalidRequest):
    code = "invalid_json"


class JsonTooDeep(InvalidRequest):
    code = "json_too_deep"


class RequestTooLarge(InvalidRequest):
    status = 413
    code = "request_too_large"


class InvalidImage(InvalidRequest):
    code = "invalid_image"


class UnsupportedImageFormat(InvalidRequest):
    status = 415
    code = "unsupported_image_format"


class ImageTooLarge(InvalidRequest):
    status = 413
    code = "image_too_large"


class ImageUrlForbidden(InvalidRequest):
    status = 403
    code = "image_url_forbidden"


class ImageFetchFailed(InvalidRequest):
    status = 422
    code = "image_fetch_failed"


class UnknownModel(InvalidRequest):
    status = 404
    code = "model_not_found"


class AuthenticationFailed(GatewayError):
    status = 401
    code = "invalid_api_key"
    type = "authentication_error"


class BudgetExceeded(GatewayError):
    status = 402
    code = "budget_exceeded"
    type = "insufficient_quota"


class RateLimited(GatewayError):
    status = 429
    code = "rate_limit_exceeded"
    type = "rate_limit_error"


class UpstreamFailed(GatewayError):
    """Every attempt on every route of the chain failed; carries the last upstream's verdict."""

    status = 502
    code = "upstream_error"
    type = "api_error"


class UpstreamUnavailable(UpstreamFailed):
    status = 503
    code = "upstream_unavailable"


class StateUnavailable(GatewayError):
    """The shared state store (Redis) is unreachable and ``state.on_failure`` is ``closed``."""

    status = 503
    code = "state_unavailable"
    type = "api_error"


class StructuredOutputInvalid(UpstreamFailed):
    """The answer broke the request's ``response_format`` JSON schema, after one repair retry."""

    code = "structured_output_invalid"


class ImageBlocked(InvalidRequest):
    """A guardrail detector in ``block`` mode fired. 422: the request is well-formed but its
    content is refused; the message names the detector so the client knows which rule fired."""

    status = 422
    code = "image_blocked"
