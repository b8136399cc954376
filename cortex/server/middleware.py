"""ASGI middleware: API-key authentication and the request-body size limit.

Both are plain ASGI (no response buffering), so streaming responses pass through
untouched, and both answer in the one error shape of ``cortex.server.errors``.
"""
from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from cortex.server.errors import ApiError, PayloadTooLarge, Unauthorized

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Paths served without a key: liveness/readiness probes and the dashboard's static
# shell (it holds no data; the JSON it polls needs the key).
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/", "/static/dashboard.js",
                          "/static/dashboard.css", "/favicon.ico"})


async def send_error(send: Send, error: ApiError, extra_headers: dict[str, str] | None = None
                     ) -> None:
    body = json.dumps(error.body()).encode()
    headers = {"content-type": "application/json", "content-length": str(len(body)),
               **error.headers(), **(extra_headers or {})}
    await send({"type": "http.response.start", "status": error.status,
                "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]})
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


class ApiKeyMiddleware:
    """Require ``Authorization: Bearer <key>`` on every non-public path."""

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app = app
        self._key = api_key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS:
            return await self.app(scope, receive, send)
        auth = _header(scope, b"authorization") or ""
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self._key):
            return await self.app(scope, receive, send)
        why = "missing API key" if not auth else "invalid API key"
        await send_error(send, Unauthorized(f"{why}: send 'Authorization: Bearer <key>'"),
                         {"WWW-Authenticate": "Bearer"})


class BodyLimitMiddleware:
    """Refuse request bodies over ``max_body_bytes`` with 413 (declared or streamed)."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    def _too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge(f"request body is larger than the server's limit of "
                               f"{self.max_body_bytes} bytes (server.max_body_bytes)")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        declared = _header(scope, b"content-length")
        if declared and declared.isdigit() and int(declared) > self.max_body_bytes:
            return await send_error(send, self._too_large())
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away before sending its body
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_body_bytes:
                return await send_error(send, self._too_large())
            if not message.get("more_body", False):
                break
        body, replayed = b"".join(chunks), False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
