"""Run the server: bind, start engines in the background, serve, drain on SIGTERM.

Shutdown (SIGTERM or Ctrl-C): the service stops admitting (new runs get 503,
``/readyz`` turns 503), in-flight runs get ``server.grace_s`` seconds to finish,
the rest are cancelled with the reason, and only then does uvicorn stop
listening, after waiting clients and event streams have been sent their
run's terminal state. A second signal skips the wait.
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import signal
import socket
import sys
import threading
from collections.abc import Callable
from types import FrameType

import uvicorn

from cortex.config import ConfigError, CortexConfig, check_server
from cortex.engine.base import BaseEngine
from cortex.server.app import create_app
from cortex.server.service import CortexService

log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_server_config(cfg: CortexConfig) -> None:
    """Refuse configs the server must not start with (errors name the field)."""
    server = cfg.server
    check_server(server, cfg.source)
    key = server.api_key
    if key is not None and (not isinstance(key, str) or not key.strip()):
        raise ConfigError(cfg.source, "server.api_key", "the API key is empty or only "
                          "whitespace, so no client could authenticate; set server.api_key_env "
                          "(or --api-key-env) to an environment variable holding a real key")
    if key is not None and key != key.strip():
        raise ConfigError(cfg.source, "server.api_key", "the API key starts or ends with "
                          "whitespace (a newline?), which no Authorization header can carry, "
                          "so no client could authenticate; strip it")
    if not is_loopback(server.host) and not server.api_key:
        raise ConfigError(cfg.source, "server.api_key", f"the server would listen on "
                          f"{server.host}, beyond loopback, without an API key; set "
                          "server.api_key_env (or --api-key-env) to an environment variable "
                          "holding one, or listen on 127.0.0.1")


def bind_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ValueError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.set_inheritable(True)
    return sock


class _DrainingServer(uvicorn.Server):
    """uvicorn, but the first signal drains the service before the server stops."""

    def __init__(self, config: uvicorn.Config, on_signal: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_signal = on_signal
        self._signalled = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._signalled:  # a second signal: stop now
            self.should_exit = True
            self.force_exit = sig == signal.SIGINT
            return
        self._signalled = True
        self._on_signal()


class CortexServer:
    """One server process's worth of Cortex: service, app, socket, uvicorn.

    Args:
        cfg: the deployment config (``cfg.server`` gives host, port, key, limits).
        announce: told one line when listening, when ready, when draining and when drained
            (the CLI prints it). If it raises (stdout a closed pipe), the line is logged
            instead: a failing announce never stops the server, its start or its drain.
        log_level: uvicorn's log level.
        access_log: log every request.
        engines: pre-built engines instead of the config's (tests, embedding).
    """

    def __init__(self, cfg: CortexConfig, announce: Callable[[str], None] | None = None,
                 log_level: str = "info", access_log: bool = False,
                 engines: dict[str, BaseEngine] | None = None) -> None:
        check_server_config(cfg)
        self.cfg = cfg
        self.service = CortexService(cfg, engines=engines)
        self.app = create_app(self.service)
        self.sock = bind_socket(cfg.server.host, cfg.server.port)
        host, port = self.sock.getsockname()[:2]
        self.url = f"http://{f'[{host}]' if ':' in host else host}:{port}"
        self._announce = announce or (lambda line: log.info("%s", line))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain: asyncio.Task[None] | None = None
        config = uvicorn.Config(self.app, lifespan="off", log_level=log_level,
                                access_log=access_log, timeout_graceful_shutdown=5)
        self._uvicorn = _DrainingServer(config, self.request_drain)

    def serve_forever(self) -> None:
        """Run the server on a new event loop (uvloop when installed) until it stops."""
        factory = self._uvicorn.config.get_loop_factory()
        if sys.version_info >= (3, 11):
            with asyncio.Runner(loop_factory=factory) as runner:
                runner.run(self.run())
        else:  # pragma: no cover - Python 3.10 has no loop factories
            asyncio.run(self.run())

    async def run(self) -> None:
        """Serve until drained and stopped. Raises the engines' start error, if any."""
        self._loop = asyncio.get_running_loop()
        starter = asyncio.create_task(self._start())
        self._say(f"listening on {self.url} (policy {self.cfg.policy}); starting engines")
        try:
            await self._uvicorn.serve(sockets=[self.sock])
        finally:
            starter.cancel()
            await asyncio.gather(starter, return_exceptions=True)
            await self.service.close()
            self.sock.close()
        if self.service.start_error is not None:
            raise self.service.start_error

    async def _start(self) -> None:
        try:
            await self.service.start()
        except Exception as exc:  # noqa: BLE001 - reported by run(); the server stops
            log.error("engines failed to start: %s", exc)
            self._uvicorn.should_exit = True
            return
        pools = ", ".join(self.service.runtime.controller.pools)
        self._say(f"ready: {len(self.service.runtime.engines)} engines, pools: {pools}")

    def _say(self, line: str) -> None:
        """``announce`` the line; if that fails (e.g. BrokenPipeError: the reader of stdout
        went away), log it instead of letting it end the caller."""
        try:
            self._announce(line)
        except Exception as exc:  # noqa: BLE001 - any failure: the server goes on
            log.warning("could not announce %r (%s: %s)", line, type(exc).__name__, exc)

    def request_drain(self) -> None:
        """Begin the graceful shutdown (thread- and signal-safe)."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._begin_drain)

    def request_exit(self) -> None:
        """Stop without draining (what is in flight is cancelled by ``service.close``)."""
        self._uvicorn.should_exit = True

    def _begin_drain(self) -> None:
        if self._drain is None:
            self._drain = asyncio.ensure_future(self._drain_then_exit())

    async def _drain_then_exit(self) -> None:
        """Drain, then stop uvicorn. Nothing here may keep the server up: a failing
        announce is logged (``_say``), and should the drain itself fail the server
        still stops (``close`` then cancels what is left)."""
        try:
            grace = float(self.cfg.server.grace_s)
            self._say(f"draining: no new runs; {self.service.num_active} in flight get "
                      f"{grace:g} s")
            result = await self.service.drain(grace)
            self._say(f"drained: {result.num_finished} finished, {result.num_cancelled} "
                      "cancelled; stopping")
            await asyncio.sleep(0.05)  # let waiting handlers and streams send the final states
        except Exception:
            log.exception("graceful drain failed; stopping now")
        finally:
            self._uvicorn.should_exit = True


def run_in_thread(server: CortexServer) -> threading.Thread:
    """Serve on a daemon thread with its own event loop (tests, notebooks)."""
    thread = threading.Thread(target=server.serve_forever, daemon=True, name="cortex-server")
    thread.start()
    return thread
