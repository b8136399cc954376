"""Shared boundary types of Cortex.

Every package talks to the others through these dataclasses; none of them owns
behaviour. Times are seconds (floats) on whatever clock the runtime drives:
the asyncio runtime passes ``time.monotonic()``, the simulator its virtual clock.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

# Outcomes a stage may report; LLM stages and tools may also return any other
# label (e.g. ``suspicious``) and workflows may branch on it.
OK = "ok"
ERROR = "error"
EMPTY = "empty"


class RunStatus(str, enum.Enum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REJECTED = "rejected"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self not in (RunStatus.PENDING, RunStatus.RUNNING)


class StageKind(str, enum.Enum):
    LLM = "llm"
    TOOL = "tool"


@dataclass(slots=True)
class SamplingParams:
    max_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass(slots=True)
class Usage:
    """What an engine honestly reports for one call.

    ``cached_prompt_tokens`` is None when the backend cannot tell (never guessed).
    """

    prompt_tokens: int = 0
    cached_prompt_tokens: int | None = 0
    output_tokens: int = 0
    queue_s: float = 0.0
    service_s: float = 0.0

    @property
    def uncached_prompt_tokens(self) -> int:
        return self.prompt_tokens - (self.cached_prompt_tokens or 0)


@dataclass(slots=True)
class EngineRequest:
    """One LLM call as an engine sees it.

    ``messages`` (chat) or ``prompt`` (completion text) carries the input;
    ``prompt_tokens`` holds token ids once the runtime tokenized it with the
    pool's tokenizer (the router needs them for prefix matching; the simulator
    fills them from its workload model).
    """

    request_id: str
    prompt_tokens: list[int] = field(default_factory=list)
    messages: list[dict[str, str]] | None = None
    prompt: str | None = None
    params: SamplingParams = field(default_factory=SamplingParams)
    model: str | None = None
    # Simulated engines only: how many tokens the synthetic model will emit.
    sim_output_tokens: int | None = None
    # Simulated outcomes only: the chance that the knobs applied to this call (a
    # shorter output, a lighter model; their costs) make a correct answer wrong.
    sim_quality_loss: float = 0.0


@dataclass(slots=True)
class Completion:
    request_id: str
    text: str
    usage: Usage
    engine_id: str
    finish_reason: str = "stop"


@dataclass(slots=True)
class ToolResult:
    """What a tool callable returns: an outcome label and a JSON-able output."""

    outcome: str
    output: dict[str, Any] = field(default_factory=dict)
    message: str = ""


@dataclass(slots=True)
class CallResult:
    """A finished stage call as the orchestrator consumes it."""

    outcome: str
    output: dict[str, Any] = field(default_factory=dict)
    usage: Usage = field(default_factory=Usage)
    engine_id: str = ""
    error: str = ""


CANCELLED = "cancelled"  # trace outcome of a call stopped before it finished
REJECTED = "rejected"    # trace outcome of a call a full queue refused
STOPPED_OUTCOMES = frozenset({CANCELLED, REJECTED})


@dataclass(slots=True)
class TraceEntry:
    """One stage call of a run, kept in the run's trace."""

    call_id: str
    stage: str
    attempt: int
    engine_id: str
    pool: str
    outcome: str
    queued_at: float
    started_at: float
    finished_at: float
    usage: Usage
    error: str = ""

    @property
    def ran(self) -> bool:
        """The call finished on its engine or tool: not stopped first (trace outcome
        ``cancelled``) nor refused by a full queue (``rejected``)."""
        return self.outcome not in STOPPED_OUTCOMES

    @property
    def queue_wait_s(self) -> float:
        return max(0.0, self.started_at - self.queued_at)

    def to_dict(self) -> dict[str, Any]:
        return {
            "call_id": self.call_id,
            "stage": self.stage,
            "attempt": self.attempt,
            "engine": self.engine_id,
            "pool": self.pool,
            "outcome": self.outcome,
            "queue_wait_s": round(self.queue_wait_s, 6),
            "service_s": round(self.usage.service_s, 6),
            "prompt_tokens": self.usage.prompt_tokens,
            "cached_prompt_tokens": self.usage.cached_prompt_tokens,
            "output_tokens": self.usage.output_tokens,
            "error": self.error,
        }
