"""Server-sent events framing (``text/event-stream``)."""
from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi.responses import StreamingResponse

from cortex.server.jsonsafe import dumps

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
KEEP_ALIVE = b": keep-alive\n\n"


def sse_frame(data: Any, event: str | None = None, event_id: int | None = None) -> bytes:
    """One SSE message; ``data`` is JSON-encoded unless it is already a string
    (NaN and infinities as null: ``cortex.server.jsonsafe``)."""
    lines = []
    if event_id is not None:
        lines.append(f"id: {event_id}")
    if event is not None:
        lines.append(f"event: {event}")
    text = data if isinstance(data, str) else dumps(data)
    lines.append(f"data: {text}")
    return ("\n".join(lines) + "\n\n").encode()


def sse_response(frames: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(frames, media_type="text/event-stream", headers=SSE_HEADERS)
