"""OpenAI-compatible endpoints: ``/v1/chat/completions``, ``/v1/completions``, ``/v1/models``.

``model`` names a workflow or a pool. A workflow gets the last user message (or
the prompt) as its first declared input, other inputs from the ``inputs``
extension field, and answers with its final output. A pool serves one call
with the request's own messages and sampling parameters, through that pool's
queue, scheduler and router. Engines return whole completions, so a stream
sends the role at once and the text when the call or run has finished.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from cortex.core import ERROR, RunStatus, SamplingParams, TraceEntry
from cortex.orchestrator.run import Run
from cortex.server.deployment import DirectCall
from cortex.server.errors import (
    ApiError,
    BadRequest,
    Conflict,
    InvalidRequest,
    Overloaded,
    RunFailed,
    RunTimedOut,
    Unavailable,
)
from cortex.server.events import RunEvents
from cortex.server.jsonsafe import SafeJSONResponse, dumps
from cortex.server.routes_runs import ServiceDep, seconds
from cortex.server.schemas import ChatRequest, CompletionRequest, OpenAIRequest
from cortex.server.service import CortexService, Submission
from cortex.server.sse import KEEP_ALIVE, sse_frame, sse_response
from cortex.server.views import model_views

router = APIRouter(prefix="/v1", tags=["openai"])
KEEP_ALIVE_S = 15.0


@router.get("/models")
async def list_models(service: ServiceDep) -> dict[str, Any]:
    return {"object": "list", "data": model_views(service)}


@router.post("/chat/completions")
async def chat_completions(body: ChatRequest, service: ServiceDep
                           ) -> Response:
    workflow, is_pool = service.resolve_model(body.model)
    text = body.last_user_text()
    if is_pool:
        direct = DirectCall(body.sampling(body.token_limit or SamplingParams().max_tokens),
                            messages=body.engine_messages())
        sub = Submission(workflow, {"prompt": text or "", "system": body.system_text()},
                         slo_s=seconds(body.slo_ms), direct=direct)
    else:
        if text is None:
            raise InvalidRequest("a workflow model needs a user message", param="messages")
        sub = _workflow_submission(service, workflow, text, body)
    return await _respond(service, service.submit(sub), body, chat=True)


@router.post("/completions")
async def completions(body: CompletionRequest, service: ServiceDep
                      ) -> Response:
    workflow, is_pool = service.resolve_model(body.model)
    if is_pool:
        direct = DirectCall(body.sampling(body.max_tokens), prompt=body.prompt_text())
        sub = Submission(workflow, {"prompt": body.prompt_text(), "system": ""},
                         slo_s=seconds(body.slo_ms), direct=direct)
    else:
        sub = _workflow_submission(service, workflow, body.prompt_text(), body)
    return await _respond(service, service.submit(sub), body, chat=False)


def _workflow_submission(service: CortexService, workflow: str, text: str,
                         body: OpenAIRequest) -> Submission:
    inputs = dict(body.inputs or {})
    wf = service.runtime.controller.orchestrator.workflows[workflow]
    if wf.inputs:
        inputs[wf.inputs[0]] = text
    return Submission(workflow, inputs, slo_s=seconds(body.slo_ms))


async def _respond(service: CortexService, run: Run, body: OpenAIRequest, chat: bool
                   ) -> Response:
    if body.stream:
        return sse_response(_stream(service, run, body, chat))
    run = await service.wait(run.run_id)
    raise_for_run(run, service.events, chat)
    return SafeJSONResponse(_completion(run, body, chat))


def raise_for_run(run: Run, events: RunEvents | None = None, chat: bool = True) -> None:
    """Map a run that did not succeed to the error an OpenAI client should see: 400 when
    it failed on the request's own content (``request_fault``), else 502 / 504 / ..."""
    why = f"run {run.run_id} {run.status.value}: {run.reason}"
    if run.status is RunStatus.SUCCEEDED:
        return
    if run.status is RunStatus.REJECTED:
        raise Overloaded(why, retry_after_s=1)
    if run.status is RunStatus.TIMED_OUT:
        raise RunTimedOut(why)
    if run.status is RunStatus.CANCELLED:
        if run.reason.startswith("server"):
            raise Unavailable(why, code="shutting_down")
        raise Conflict(why, code="run_cancelled")
    fault = request_fault(run, events, "messages" if chat else "prompt")
    if fault is not None:
        raise fault
    raise RunFailed(why)


def request_fault(run: Run, events: RunEvents | None, prompt_param: str) -> BadRequest | None:
    """The 400 for a failed run whose failing call failed on the request's own content:

    * an engine refused the request itself (``EngineRequestError``, reported as the
      call's ``error_code``), e.g. ``context_length_exceeded``: the prompt does not fit;
    * a tool stage returned an error before any LLM stage ran, so its arguments came
      from the request's inputs alone (tools report bad arguments by returning an error;
      a tool that *raised* is a bug, and an error after an LLM stage is the model's).

    None for every other failure (a real server or engine failure: 502).
    """
    entry = _failing_call(run)
    if entry is None:
        return None
    why = f"run {run.run_id} failed: {run.reason}"
    finished = events.find(run.run_id, entry.call_id, "call_finished") if events else None
    code = (finished or {}).get("error_code")
    if code:
        param = prompt_param if code == "context_length_exceeded" else None
        return BadRequest(why, param=param, code=code)
    stages = run.workflow.stages
    stage = stages.get(entry.stage)
    if stage is None or stage.is_llm or entry.error.startswith(f"tool {stage.tool} raised "):
        return None
    before = run.trace[:run.trace.index(entry)]
    if any(t.stage in stages and stages[t.stage].is_llm for t in before):
        return None
    return BadRequest(f"{why} (rejected by tool stage {entry.stage!r} on the request's "
                      f"inputs)", param=_input_param(run, entry.error), code="invalid_input")


def _failing_call(run: Run) -> TraceEntry | None:
    """The call whose error ended the run (its reason ends with that error), if any."""
    entry = next((t for t in reversed(run.trace) if t.outcome == ERROR), None)
    if entry is None or not entry.error or not run.reason.endswith(entry.error):
        return None
    return entry


def _input_param(run: Run, error: str) -> str:
    """``inputs.<name>`` if the error quotes exactly one input's value, else ``inputs``."""
    quoted = [name for name, value in run.inputs.items() if isinstance(value, str) and value
              and (f"'{value}'" in error or f'"{value}"' in error)]
    return f"inputs.{quoted[0]}" if len(quoted) == 1 else "inputs"


def answer_text(output: Any) -> str:
    """A run's final output as the assistant's text (``text`` field, or JSON)."""
    if isinstance(output, str):
        return output
    if isinstance(output, dict) and isinstance(output.get("text"), str):
        return output["text"]
    return dumps(output, compact=False)


def usage_of(run: Run) -> dict[str, Any]:
    prompt = sum(t.usage.prompt_tokens for t in run.trace)
    cached = sum(t.usage.cached_prompt_tokens or 0 for t in run.trace)
    output = sum(t.usage.output_tokens for t in run.trace)
    return {"prompt_tokens": prompt, "completion_tokens": output,
            "total_tokens": prompt + output, "prompt_tokens_details": {"cached_tokens": cached}}


def _finish_reason(run: Run, body: OpenAIRequest) -> str:
    limit = getattr(body, "token_limit", None) or getattr(body, "max_tokens", None)
    last = run.trace[-1].usage.output_tokens if run.trace else 0
    return "length" if limit and len(run.trace) == 1 and last >= limit else "stop"


def _head(run: Run, body: OpenAIRequest, chat: bool) -> dict[str, Any]:
    kind = "chat.completion" if chat else "text_completion"
    return {"id": f"{'chatcmpl' if chat else 'cmpl'}-{run.run_id}", "object": kind,
            "created": int(time.time()), "model": body.model}


def _cortex_info(run: Run) -> dict[str, Any]:
    return {"run_id": run.run_id, "workflow": run.workflow.name, "status": run.status.value,
            "latency_s": run.latency_s, "met_slo": run.met_slo,
            "engines": [t.engine_id for t in run.trace]}


def _completion(run: Run, body: OpenAIRequest, chat: bool) -> dict[str, Any]:
    text, finish = answer_text(run.output), _finish_reason(run, body)
    choice: dict[str, Any] = {"index": 0, "finish_reason": finish, "logprobs": None}
    if chat:
        choice["message"] = {"role": "assistant", "content": text}
    else:
        choice["text"] = text
    return {**_head(run, body, chat), "choices": [choice], "usage": usage_of(run),
            "cortex": _cortex_info(run)}


def _chunk(run: Run, body: OpenAIRequest, chat: bool, text: str | None,
           finish: str | None, role: bool = False) -> bytes:
    head = _head(run, body, chat)
    head["object"] = "chat.completion.chunk" if chat else "text_completion"
    if chat:
        delta: dict[str, Any] = {"role": "assistant"} if role else {}
        if text is not None:
            delta["content"] = text
        choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish}
    else:
        choice = {"index": 0, "text": text or "", "finish_reason": finish, "logprobs": None}
    return sse_frame({**head, "choices": [choice]})


async def _stream(service: CortexService, run: Run, body: OpenAIRequest, chat: bool
                  ) -> AsyncIterator[bytes]:
    try:
        if chat:
            yield _chunk(run, body, chat, "", None, role=True)
        while not run.status.is_terminal:
            try:
                run = await service.wait(run.run_id, KEEP_ALIVE_S)
            except asyncio.TimeoutError:
                yield KEEP_ALIVE
        raise_for_run(run, service.events, chat)
    except ApiError as exc:
        yield sse_frame(exc.body())
        return
    finally:
        if not run.status.is_terminal:  # the client went away: stop the work
            service.runtime.cancel(run.run_id, "client disconnected from the stream")
    yield _chunk(run, body, chat, answer_text(run.output), None)
    yield _chunk(run, body, chat, None, _finish_reason(run, body))
    if body.include_usage:
        yield sse_frame({**_head(run, body, chat), "object": "chat.completion.chunk"
                         if chat else "text_completion", "choices": [], "usage": usage_of(run)})
    yield sse_frame("[DONE]")
