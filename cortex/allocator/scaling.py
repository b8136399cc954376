"""Engine providers: the scale-out / scale-in hook of the allocator.

A provider starts and stops engines on request; the allocator decides when
(``SCALE_OUT`` / ``SCALE_IN`` decisions) and adds or retires the engines in the
pools. The contract is synchronous and time-free so the same allocator drives
the simulator and the asyncio runtime: ``start`` only *begins* starting an
engine; ``ready`` (polled every allocator step) hands over those that are up.

* ``SimEngineProvider`` -- simulated engines with a start-up delay, within a budget;
* ``AsyncEngineProvider`` -- real engines (embedded llama.cpp within a core
  budget, remote servers from a list of standby URLs, anything with a factory)
  started as tasks on the running asyncio loop.
"""
from __future__ import annotations

import abc
import asyncio
import itertools
import logging
import os
from collections.abc import Callable
from typing import Any

from cortex.engine.base import BaseEngine, EngineView
from cortex.engine.sim import SimEngine, SimEngineConfig

log = logging.getLogger(__name__)
Ready = tuple[str, str, EngineView]  # (engine id, pool, view)


class BaseEngineProvider(abc.ABC):
    @abc.abstractmethod
    def num_startable(self) -> int:
        """How many more engines may be started now (the budget left)."""

    @abc.abstractmethod
    def start(self, pool: str, model: str, now: float) -> str | None:
        """Begin starting an engine of ``model`` for ``pool``.

        Returns:
            The new engine's id, or None when it cannot (budget, unknown model).
        """

    @abc.abstractmethod
    def ready(self, now: float) -> list[Ready]:
        """Engines that finished starting since the last call, for their pools."""

    @abc.abstractmethod
    def stop(self, engine_id: str, now: float) -> None:
        """Stop a drained engine the allocator has retired (it serves nothing)."""

    def failed(self, now: float) -> list[tuple[str, str]]:
        """(engine id, why) of engines that failed to start since the last call; the
        allocator closes their scale-out records. None by default."""
        return []


class SimEngineProvider(BaseEngineProvider):
    """Simulated engines: ready ``startup_s`` after ``start``.

    Args:
        engines: the simulator's engine dict; started engines are added to it.
        config: cost model of new engines.
        max_engines: budget of live plus starting engines (counting ``engines``).
        startup_s: time from ``start`` to ``ready`` (model load).
    """

    def __init__(self, engines: dict[str, SimEngine], config: SimEngineConfig,
                 max_engines: int, startup_s: float = 5.0) -> None:
        self.engines, self.config = engines, config
        self.max_engines, self.startup_s = max_engines, startup_s
        self._pending: list[tuple[float, str, str, str]] = []  # (ready at, id, pool, model)
        self._stopped: set[str] = set()
        self._ids = itertools.count()

    def num_startable(self) -> int:
        live = len(self.engines) - len(self._stopped)
        return max(0, self.max_engines - live - len(self._pending))

    def start(self, pool: str, model: str, now: float) -> str | None:
        if self.num_startable() <= 0:
            return None
        engine_id = f"s{next(self._ids)}"
        while engine_id in self.engines:
            engine_id = f"s{next(self._ids)}"
        self._pending.append((now + self.startup_s, engine_id, pool, model))
        return engine_id

    def ready(self, now: float) -> list[Ready]:
        due = [p for p in self._pending if p[0] <= now]
        self._pending = [p for p in self._pending if p[0] > now]
        out: list[Ready] = []
        for _, engine_id, pool, model in due:
            engine = SimEngine(engine_id, self.config, model)
            self.engines[engine_id] = engine
            out.append((engine_id, pool, engine))
        return out

    def stop(self, engine_id: str, now: float) -> None:
        self._stopped.add(engine_id)  # kept in ``engines`` for its statistics


EngineFactory = Callable[[str, str], BaseEngine]  # (engine id, model) -> unstarted engine


class AsyncEngineProvider(BaseEngineProvider):
    """Real engines started as tasks on the running asyncio loop.

    Args:
        factory: builds an unstarted engine for (engine id, model).
        engines: the runtime's engine dict; an engine joins it once started.
        max_engines: budget of live plus starting engines (counting ``engines``);
            for the embedded backend use ``core_budget()``.
    """

    def __init__(self, factory: EngineFactory, engines: dict[str, BaseEngine],
                 max_engines: int, prefix: str = "auto") -> None:
        self.factory, self.engines, self.max_engines = factory, engines, max_engines
        self._prefix, self._ids = prefix, itertools.count()
        self._starting: dict[str, asyncio.Task[None]] = {}
        self._ready: list[Ready] = []
        self._failed: list[tuple[str, str]] = []

    def num_startable(self) -> int:
        return max(0, self.max_engines - len(self.engines) - len(self._starting))

    def start(self, pool: str, model: str, now: float) -> str | None:
        if self.num_startable() <= 0:
            return None
        engine_id = f"{self._prefix}-{next(self._ids)}"
        try:
            engine = self.factory(engine_id, model)
        except Exception as exc:  # noqa: BLE001 - a factory bug must not stop the allocator
            log.warning("cannot start an engine for pool %s: %s", pool, exc)
            return None
        task = asyncio.get_running_loop().create_task(engine.start())
        self._starting[engine_id] = task
        task.add_done_callback(lambda t: self._started(engine_id, pool, engine, t))
        return engine_id

    def _started(self, engine_id: str, pool: str, engine: BaseEngine,
                 task: asyncio.Task[None]) -> None:
        self._starting.pop(engine_id, None)
        if task.cancelled() or task.exception() is not None:
            why = "cancelled" if task.cancelled() else repr(task.exception())
            log.warning("engine %s failed to start: %s", engine_id, why)
            self._failed.append((engine_id, f"failed to start: {why}"))
            return
        self.engines[engine_id] = engine
        self._ready.append((engine_id, pool, engine))

    def ready(self, now: float) -> list[Ready]:
        out, self._ready = self._ready, []
        return out

    def failed(self, now: float) -> list[tuple[str, str]]:
        out, self._failed = self._failed, []
        return out

    def stop(self, engine_id: str, now: float) -> None:
        engine = self.engines.pop(engine_id, None)
        if engine is not None:
            asyncio.get_running_loop().create_task(engine.close())


def core_budget(cores_per_engine: int = 1, reserved_cores: int = 1) -> int:
    """Engines the embedded backend may run here: one per ``cores_per_engine`` cores
    (llama.cpp engines use ``n_threads=1``), keeping ``reserved_cores`` for the server."""
    return max(1, ((os.cpu_count() or 1) - reserved_cores) // max(1, cores_per_engine))


def standby_urls(urls: list[str], **options: Any) -> EngineFactory:
    """A factory for ``AsyncEngineProvider`` that connects to the next unused URL
    of ``urls`` (standby OpenAI-compatible servers). Raises ``ValueError`` when
    all are in use."""
    remaining = list(urls)

    def make(engine_id: str, model: str) -> BaseEngine:
        from cortex.engine.openai_remote import OpenAIRemoteConfig, OpenAIRemoteEngine

        if not remaining:
            raise ValueError(f"no standby URL left (had {len(urls)})")
        config = OpenAIRemoteConfig(base_url=remaining.pop(0), model=model, **options)
        return OpenAIRemoteEngine(engine_id, config)

    return make
