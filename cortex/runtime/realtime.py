"""The asyncio runtime: real time, real engines, real tools.

It drives the same synchronous ``Controller`` as the simulator: it reports
events (arrival, completion, failure, time) and carries out the returned
actions. Blocking work never runs on the event loop: engines have their own
workers, tools run in a thread pool.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from cortex.controller import Action, CancelCall, Controller, RunFinished, StartCall
from cortex.core import ERROR, CallResult, EngineRequest, RunStatus, Usage
from cortex.engine.base import BaseEngine, EngineRequestError
from cortex.orchestrator.outputs import llm_result
from cortex.orchestrator.run import Run, StageCall
from cortex.tools import TOOLS, load_builtin_tools

log = logging.getLogger(__name__)
Listener = Callable[[dict[str, Any]], None]


def chat_preparer(engines_of_stage: Callable[[str], list[BaseEngine]]
                  ) -> Callable[[StageCall], EngineRequest]:
    """Build chat requests from a call's rendered messages, tokenized by its pool's model."""

    def prepare(call: StageCall) -> EngineRequest:
        llm = call.stage.llm
        assert llm is not None
        messages = [{"role": "system", "content": call.args["system"]}] if call.args["system"] \
            else []
        messages.append({"role": "user", "content": call.args["user"]})
        params = llm.params
        if call.fanout_index and params.seed is None:
            from dataclasses import replace

            params = replace(params, seed=call.fanout_index)
        request = EngineRequest(call.call_id, messages=messages, params=params, model=llm.model)
        engines = engines_of_stage(call.stage.name)
        if engines:
            request.prompt_tokens = engines[0].tokenize(request)
        return request

    return prepare


class RealtimeRuntime:
    """Args:
        controller: the decision loop (built with ``chat_preparer``).
        engines: real engines by id (already started).
        num_tool_threads: thread pool size for tool calls.
        tick_s: how often timeouts are checked.
    """

    def __init__(self, controller: Controller, engines: dict[str, BaseEngine],
                 num_tool_threads: int = 8, tick_s: float = 0.05,
                 clock: Callable[[], float] = time.monotonic) -> None:
        load_builtin_tools()
        self.controller = controller
        self.engines = engines
        self.clock = clock
        self.tick_s = tick_s
        self.listeners: list[Listener] = []
        self._tools = ThreadPoolExecutor(num_tool_threads, thread_name_prefix="cortex-tool")
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._done: dict[str, asyncio.Future[Run]] = {}
        self._probing: set[str] = set()
        self._ticker: asyncio.Task[None] | None = None

    # ---- lifecycle -----------------------------------------------------------
    async def start(self) -> None:
        self._ticker = asyncio.create_task(self._tick_loop())

    async def close(self) -> None:
        if self._ticker:
            self._ticker.cancel()
        for task in list(self._tasks.values()):
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._tools.shutdown(wait=False, cancel_futures=True)
        await asyncio.gather(*(e.close() for e in self.engines.values()), return_exceptions=True)

    # ---- runs ----------------------------------------------------------------
    def submit(self, workflow: str, inputs: dict[str, Any], **kwargs: Any) -> Run:
        """Admit a run now. Raises KeyError/ValueError on bad input."""
        run, actions = self.controller.admit(workflow, inputs, self.clock(), **kwargs)
        self._done[run.run_id] = asyncio.get_running_loop().create_future()
        self._execute(actions)
        return run

    async def wait(self, run_id: str) -> Run:
        return await asyncio.shield(self._done[run_id])

    async def run(self, workflow: str, inputs: dict[str, Any], **kwargs: Any) -> Run:
        return await self.wait(self.submit(workflow, inputs, **kwargs).run_id)

    def forget(self, run_id: str) -> None:
        """Drop a finished run's state here and in the orchestrator (long-running servers)."""
        fut = self._done.get(run_id)
        if fut is not None and fut.done():
            del self._done[run_id]
        self.controller.orchestrator.forget(run_id)

    def cancel(self, run_id: str, reason: str = "cancelled by client",
               status: RunStatus = RunStatus.CANCELLED) -> None:
        self._execute(self.controller.cancel_run(run_id, self.clock(), reason, status))

    # ---- actions -------------------------------------------------------------
    def _execute(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, StartCall):
                call = action.call
                work = self._llm(call, action.engine_id) if call.stage.is_llm else self._tool(call)
                self._tasks[call.call_id] = asyncio.create_task(work)
                self._emit("call_started", call)
            elif isinstance(action, CancelCall):
                task = self._tasks.pop(action.call.call_id, None)
                if task is not None:
                    task.cancel()
                self._emit("call_cancelled", action.call)
            elif isinstance(action, RunFinished):
                self._finish(action.run)

    def _finish(self, run: Run) -> None:
        fut = self._done.get(run.run_id)
        if fut is not None and not fut.done():
            fut.set_result(run)
        self._emit_run(run)

    async def _llm(self, call: StageCall, engine_id: str) -> None:
        engine = self.engines[engine_id]
        assert call.request is not None
        try:
            completion = await engine.generate(call.request)
        except asyncio.CancelledError:
            raise
        except EngineRequestError as exc:  # the request's fault: the engine stays healthy
            self._tasks.pop(call.call_id, None)
            result = CallResult(ERROR, {}, engine_id=engine_id, error=str(exc))
            self._emit("call_finished", call, result, error_code=exc.code)
            self._execute(self.controller.complete(call, result, self.clock()))
            return
        except Exception as exc:  # noqa: BLE001 - any engine failure is retried elsewhere
            log.warning("engine %s failed call %s: %s", engine_id, call.call_id, exc)
            self._tasks.pop(call.call_id, None)
            self._start_probe(engine_id)
            why, retries = str(exc) or type(exc).__name__, call.num_retries
            actions = self.controller.fail_call(call, why, self.clock())
            # the event before the retry's call_started: call_retried when the call went
            # back to its pool's queue, else call_finished with the error the run got
            retried = call.num_retries > retries
            self._emit("call_retried" if retried else "call_finished", call,
                       CallResult(ERROR, {}, engine_id=engine_id, error=why), engine=engine_id)
            self._execute(actions)
            return
        self._tasks.pop(call.call_id, None)
        result = llm_result(call.stage, completion)
        self._emit("call_finished", call, result)
        self._execute(self.controller.complete(call, result, self.clock()))

    async def _tool(self, call: StageCall) -> None:
        started = time.perf_counter()
        try:
            fn = TOOLS.get(call.stage.tool or "")
            out = await asyncio.get_running_loop().run_in_executor(self._tools, fn, call.args)
            result = CallResult(out.outcome, out.output, engine_id=call.engine_id,
                                error=out.message if out.outcome == ERROR else "")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a tool bug fails its stage, with the reason
            result = CallResult(ERROR, {}, engine_id=call.engine_id,
                                error=f"tool {call.stage.tool} raised {type(exc).__name__}: {exc}")
        result.usage = Usage(service_s=time.perf_counter() - started)
        self._tasks.pop(call.call_id, None)
        self._emit("call_finished", call, result)
        self._execute(self.controller.complete(call, result, self.clock()))

    # ---- health and time -----------------------------------------------------------
    def _start_probe(self, engine_id: str) -> None:
        if engine_id not in self._probing:
            self._probing.add(engine_id)
            asyncio.create_task(self._probe(engine_id))

    async def _probe(self, engine_id: str, first_delay_s: float = 0.5,
                     max_delay_s: float = 30.0) -> None:
        delay = first_delay_s
        try:
            while True:
                await asyncio.sleep(delay)
                engine = self.engines.get(engine_id)
                if engine is None or engine_id not in self.controller.engine_pool:
                    return  # retired (scale-in) meanwhile: nothing left to probe
                try:
                    healthy = await engine.probe()
                except Exception:  # noqa: BLE001 - a failing probe means still unhealthy
                    healthy = False
                if engine_id not in self.controller.engine_pool:
                    return
                if healthy:
                    self._execute(self.controller.set_engine_health(engine_id, True,
                                                                    self.clock()))
                    return
                delay = min(delay * 2, max_delay_s)
        finally:
            self._probing.discard(engine_id)

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            try:
                self._execute(self.controller.tick(self.clock()))
            except Exception:  # a bug in one step must not end timeouts and allocation
                log.exception("controller tick failed; the next tick runs as usual")

    # ---- events ----------------------------------------------------------------
    def _emit(self, kind: str, call: StageCall, result: CallResult | None = None,
              error_code: str | None = None, engine: str | None = None) -> None:
        if not self.listeners:
            return
        event: dict[str, Any] = {"type": kind, "run_id": call.run_id, "call_id": call.call_id,
                                 "stage": call.stage.name, "pool": call.pool,
                                 "engine": engine or call.engine_id, "t": self.clock()}
        if result is not None:
            u = result.usage
            event.update(outcome=result.outcome, service_s=u.service_s,
                         prompt_tokens=u.prompt_tokens, cached_prompt_tokens=u.cached_prompt_tokens,
                         output_tokens=u.output_tokens, error=result.error)
        if error_code is not None:  # an EngineRequestError's code (the caller's mistake)
            event["error_code"] = error_code
        for listener in self.listeners:
            listener(event)

    def _emit_run(self, run: Run) -> None:
        for listener in self.listeners:
            listener({"type": "run_finished", "run_id": run.run_id, "status": run.status.value,
                      "reason": run.reason, "t": self.clock()})
