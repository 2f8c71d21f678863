"""OpenAI-style API errors: `{"error": {"message", "type", "param", "code"}}` with a 4xx/5xx status.

Every failure a client can cause is raised as an `APIError` with the status and body the official
`openai` client maps onto its exception classes (400 BadRequestError, 401 AuthenticationError,
404 NotFoundError, 413/503 APIStatusError ...), so callers handle our errors exactly as OpenAI's.
"""

from __future__ import annotations

from typing import Any


class APIError(Exception):
    """An error response: HTTP `status` and the OpenAI error object."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def bad_request(message: str, *, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


def model_not_found(name: str) -> APIError:
    return APIError(
        404,
        f"The model `{name}` does not exist; GET /v1/models lists the base model and its adapters.",
        param="model",
        code="model_not_found",
    )


def server_error(message: str) -> APIError:
    return APIError(500, message, type="server_error", code="internal_error")


def overloaded(message: str) -> APIError:
    # 503 (not 429): nothing is wrong with the caller's rate; the server is full right now.
    return APIError(503, message, type="server_error", code="overloaded")
