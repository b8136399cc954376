"""Errors a client can cause, and their one wire shape.

Every error the server returns, on every endpoint, has the OpenAI error shape
(so the official ``openai`` client raises the right exception class)::

    {"error": {"message": "...", "type": "...", "param": "inputs.db", "code": "..."}}
"""
from __future__ import annotations

import json
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
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


class BadRequest(ApiError):
    """A well-formed request that cannot be served as asked: its run failed on the
    request's own content (a prompt longer than the context window, an input a tool
    refused). OpenAI answers these with 400."""

    status = 400


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


# What strict JSON types say instead of pydantic's "Input should be a valid ...".
EXPECTED = {"bool_type": "must be true or false", "float_type": "must be a JSON number",
            "int_type": "must be a JSON integer", "dict_type": "must be a JSON object",
            "finite_number": "must be a finite number (not NaN or Infinity)"}
JSON_TYPES = {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
              int: "a number", float: "a number", type(None): "null"}


def _body_model(request: Request | None) -> type[BaseModel] | None:
    """The pydantic model of the matched route's JSON body, if any."""
    route = request.scope.get("route") if request is not None else None
    field = getattr(route, "body_field", None)
    model = getattr(getattr(field, "field_info", None), "annotation", None)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _body_error(kind: str | None, body: Any, request: Request | None) -> InvalidRequest:
    """The body as a whole is wrong: empty, not JSON (content type), or not an object."""
    model = _body_model(request)
    required = [name for name, f in model.model_fields.items() if f.is_required()] \
        if model is not None else []
    expected = "a JSON object" + (f" (required: {', '.join(required)})" if required else "")
    ctype = request.headers.get("content-type") if request is not None else None
    if kind == "missing":
        return InvalidRequest(f"the request body is empty: send {expected} with Content-Type: "
                              "application/json", param=required[0] if required else None,
                              code="invalid_body")
    if isinstance(body, (bytes, bytearray)):  # FastAPI parses JSON only when declared
        got = f"Content-Type {ctype!r}" if ctype else "no Content-Type header"
        return InvalidRequest(f"the request body must be {expected} sent with Content-Type: "
                              f"application/json; the request has {got}",
                              code="invalid_content_type")
    got = JSON_TYPES.get(type(body), type(body).__name__)
    return InvalidRequest(f"the request body must be {expected}, got {got}", code="invalid_body")


def _validation_error(exc: RequestValidationError, request: Request | None = None
                      ) -> InvalidRequest:
    first = exc.errors()[0] if exc.errors() else {}
    kind = first.get("type")
    if kind == "json_invalid":
        return InvalidRequest(f"request body is not valid JSON: {first.get('msg', '')}",
                              code="invalid_json")
    loc = [str(part) for part in first.get("loc", ())]
    if loc[:1] == ["body"]:
        if len(loc) == 1:
            return _body_error(kind, exc.body, request)
        loc = loc[1:]
    param = ".".join(loc) or None
    if kind == "missing" and param:
        return InvalidRequest(f"missing required field {param!r}", param=param,
                              code="missing_field")
    if kind == "extra_forbidden" and param:
        model = _body_model(request)
        known = f" (fields: {', '.join(model.model_fields)})" if model is not None else ""
        return InvalidRequest(f"unknown field {param!r}{known}", param=param,
                              code="unknown_field")
    where = f"{param}: " if param else ""
    if kind in EXPECTED:
        return InvalidRequest(f"{where}{EXPECTED[kind]}, got {_shown(first.get('input'))}",
                              param=param, code="invalid_value")
    return InvalidRequest(f"{where}{first.get('msg', 'invalid request')}", param=param,
                          code="invalid_value")


def _shown(value: Any) -> str:
    """A request value as JSON would spell it (short)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("-Infinity" if value < 0 else "Infinity")
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def install_handlers(app: FastAPI) -> None:
    """Make every error (ours, FastAPI's validation, Starlette's 404/405) use the one shape."""

    async def on_api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc)

    async def on_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(_validation_error(exc, request))

    async def on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return JSONResponse(error_body(str(exc.detail), kind), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    app.add_exception_handler(ApiError, on_api_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, on_validation)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, on_http)  # type: ignore[arg-type]
