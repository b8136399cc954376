"""Request bodies (pydantic): the workflow API and the OpenAI-compatible API.

Validation errors become 422 responses naming the field (``cortex.server.errors``).
OpenAI bodies accept and ignore fields Cortex does not use, as OpenAI-compatible
servers do, so the official clients work unchanged. JSON types are checked
strictly: a boolean is ``true`` or ``false`` (not ``"yes"`` or ``1``), a number is
a JSON number (not a string or a boolean) and finite (no ``NaN``, ``Infinity``
or ``1e400``).
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from cortex.core import SamplingParams

# A JSON boolean; a finite JSON number (ints allowed); a JSON integer.
Bool = Annotated[bool, Field(strict=True)]
Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]
Int = Annotated[int, Field(strict=True)]


class RunRequest(BaseModel):
    """``POST /v1/runs``."""

    model_config = ConfigDict(extra="forbid")

    workflow: str = Field(min_length=1, description="workflow name (GET /v1/workflows)")
    inputs: dict[str, Any] = Field(default_factory=dict)
    slo_ms: Number | None = Field(default=None, gt=0, description="latency objective")
    timeout_ms: Number | None = Field(default=None, gt=0,
                                      description="run is timed out after this (default: the "
                                      "config's run_timeout_factor x SLO, 5 unless set)")
    wait: Bool = Field(default=False, description="answer with the finished run")


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text or "" for p in self.content if p.type == "text")
        return self.content or ""


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: Bool = False


class OpenAIRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    temperature: Number | None = Field(default=None, ge=0, le=2)
    top_p: Number | None = Field(default=None, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: Int | None = None
    n: Int = Field(default=1, ge=1, le=1, description="Cortex returns one choice")
    stream: Bool = False
    stream_options: StreamOptions | None = None
    # Cortex extensions (send with the openai client's ``extra_body``):
    inputs: dict[str, Any] | None = Field(default=None, description="other workflow inputs")
    slo_ms: Number | None = Field(default=None, gt=0)

    def sampling(self, max_tokens: int) -> SamplingParams:
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        return SamplingParams(max_tokens=max_tokens,
                              temperature=0.0 if self.temperature is None else self.temperature,
                              top_p=1.0 if self.top_p is None else self.top_p,
                              stop=stop, seed=self.seed)

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatRequest(OpenAIRequest):
    """``POST /v1/chat/completions``."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: Int | None = Field(default=None, ge=1)
    max_completion_tokens: Int | None = Field(default=None, ge=1)

    def last_user_text(self) -> str | None:
        users = [m for m in self.messages if m.role == "user"]
        return users[-1].text() if users else None

    def system_text(self) -> str:
        return "\n".join(m.text() for m in self.messages if m.role in ("system", "developer"))

    def engine_messages(self) -> list[dict[str, str]]:
        return [{"role": "system" if m.role == "developer" else m.role, "content": m.text()}
                for m in self.messages]

    @property
    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(OpenAIRequest):
    """``POST /v1/completions`` (one prompt)."""

    prompt: str | list[str]
    max_tokens: Int = Field(default=16, ge=1)

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and len(value) != 1:
            raise ValueError("Cortex serves one prompt per request; send a string")
        return value

    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]
