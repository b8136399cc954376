"""Errors a client can cause, and their one wire shape.

Every error the server returns, on every endpoint, has the OpenAI error shape
(so the official ``openai`` client raises the right exception class)::

    {"error": {"message": "...", "type": "...", "param": "inputs.db", "code": "..."}}
"""
from __future__ import annotations

import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException


class ApiError(Exception):
    """Base class: an HTTP status, an OpenAI error ``type`` and a message saying what was wrong.

    Args:
        message: what was wrong and where.
        param: the offending request field (dotted path), if any.
        code: a short machine-readable code.
        retry_after_s: sent as ``Retry-After`` (whole seconds, at least 1).
    """

    status = 400
    error_type = "invalid_request_error"
    default_code: str | None = None

    def __init__(self, message: str, param: str | None = None, code: str | None = None,
                 retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code or self.default_code
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        if self.retry_after_s is None:
            return {}
        return {"Retry-After": str(max(1, math.ceil(self.retry_after_s)))}

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.error_type, self.param, self.code)


class InvalidRequest(ApiError):
    status = 422


class Unauthorized(ApiError):
    status = 401
    default_code = "invalid_api_key"


class NotFound(ApiError):
    status = 404
    error_type = "not_found_error"
    default_code = "not_found"


class Conflict(ApiError):
    status = 409
    error_type = "conflict_error"


class PayloadTooLarge(ApiError):
    status = 413
    default_code = "request_too_large"


class Overloaded(ApiError):
    status = 429
    error_type = "rate_limit_error"
    default_code = "queue_full"


class Unavailable(ApiError):
    status = 503
    error_type = "service_unavailable_error"


class RunFailed(ApiError):
    """A workflow run behind an OpenAI request ended without an answer."""

    status = 502
    error_type = "server_error"
    default_code = "run_failed"


class RunTimedOut(RunFailed):
    status = 504
    default_code = "run_timed_out"


def error_body(message: str, error_type: str, param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def error_response(error: ApiError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers())


def _validation_error(exc: RequestValidationError) -> InvalidRequest:
    first = exc.errors()[0] if exc.errors() else {}
    loc = [str(part) for part in first.get("loc", ()) if part != "body"]
    if first.get("type") == "json_invalid":
        return InvalidRequest(f"request body is not valid JSON: {first.get('msg', '')}",
                              code="invalid_json")
    param = ".".join(loc) or None
    where = f"{param}: " if param else ""
    return InvalidRequest(f"{where}{first.get('msg', 'invalid request')}", param=param,
                          code="invalid_value")


def install_handlers(app: FastAPI) -> None:
    """Make every error (ours, FastAPI's validation, Starlette's 404/405) use the one shape."""

    async def on_api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc)

    async def on_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(_validation_error(exc))

    async def on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return JSONResponse(error_body(str(exc.detail), kind), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    app.add_exception_handler(ApiError, on_api_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, on_validation)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, on_http)  # type: ignore[arg-type]
