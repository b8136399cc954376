"""Cortex deployment config (YAML): engines, placement policy, workflows, server.

    policy: cortex                 # shared-fcfs | shared-prefix | cortex
    workflows: [nl2sql]            # built-in names or paths to workflow YAML files
    engines:                       # the engine budget; placement splits it among pools
      - backend: llamacpp
        count: 2
        model: smollm2-135m        # or a path to any .gguf file
        cache_mb: 32               # prefix-cache budget per engine
      - backend: openai
        urls: [http://127.0.0.1:8000]
        model: my-model
    server: {host: 127.0.0.1, port: 8080, api_key_env: CORTEX_API_KEY}
    slo_ms: 30000                  # SLO of workflows that declare none (a request's wins)
    databases: {prod: data/prod.sqlite}  # nl2sql: extra database names clients may use
    db_dirs: [data/]               # nl2sql: clients may name .sqlite files under these
                                   # (anything else but the built-ins is refused)
    late_last: 0                   # slack pools serve calls that can no longer meet their
                                   # SLO after those that can (omit: strict least slack)
    late_last_when_tipped: false   # true: only while a pool's queue is mostly late calls
    run_timeout_factor: 5          # a run times out once this many times its SLO has passed
    allocator:                     # only with policy: cortex-malleable (docs/allocator.md)
      policy: slo-pressure         # or static (never moves)
      interval_s: 1.0              # seconds between policy steps
      options: {min_dwell_s: 15}   # the policy's options (slo-pressure: PressureConfig)
      workflow_demand: true        # load >= first visits x visits per run (false: arrivals)
      max_engines: 4               # > the engines above: scale out up to this many
      standby_urls: []             # openai backend: servers new engines connect to

Errors name the field and say what to do.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from cortex.allocator import ALLOCATION_POLICIES, AllocatorConfig, is_malleable
from cortex.allocator.policy import build_policy
from cortex.checks import is_int, is_number
from cortex.engine.base import BaseEngine
from cortex.orchestrator.orchestrator import DEFAULT_TIMEOUT_FACTOR
from cortex.pool.placement import PLACEMENTS  # cortex-malleable is registered by the import above
from cortex.pool.pool import LateOrder
from cortex.registry import Registry
from cortex.workflow import CompiledWorkflow, load_workflow

if TYPE_CHECKING:
    from cortex.nl2sql.tools import DatabaseAccess


class ConfigError(ValueError):
    """A bad config: ``source: field: message`` (``source: message`` for the whole file)."""

    def __init__(self, source: str, path: str, message: str) -> None:
        super().__init__(f"{source}: {path}: {message}" if path else f"{source}: {message}")


EngineFactory = Callable[[str, dict[str, Any]], BaseEngine]
BACKENDS: Registry[EngineFactory] = Registry("engine backend")


@BACKENDS.register("llamacpp")
def _llamacpp(engine_id: str, spec: dict[str, Any]) -> BaseEngine:
    from cortex.engine.llamacpp import LlamaCppConfig, LlamaCppEngine

    options = {k: v for k, v in spec.items() if k not in ("backend", "count", "cache_mb")}
    if "cache_mb" in spec:
        options["cache_capacity_bytes"] = int(float(spec["cache_mb"]) * 2**20)
    if "extra_models" in spec:  # other models the engine serves: names or .gguf paths
        extra = spec["extra_models"]
        if not isinstance(extra, list) or not all(isinstance(m, str) and m for m in extra):
            raise TypeError(f"extra_models must be a list of model names or .gguf paths "
                            f"(e.g. [gemma3-270m]), got {extra!r}")
        options["extra_models"] = tuple(extra)
    return LlamaCppEngine(engine_id, LlamaCppConfig(**options))


@BACKENDS.register("openai")
def _openai(engine_id: str, spec: dict[str, Any]) -> BaseEngine:
    from cortex.engine.openai_remote import OpenAIRemoteConfig, OpenAIRemoteEngine

    options = {k: v for k, v in spec.items() if k not in ("backend", "urls", "count")}
    return OpenAIRemoteEngine(engine_id, OpenAIRemoteConfig(**options))


@BACKENDS.register("vllm")
def _vllm(engine_id: str, spec: dict[str, Any]) -> BaseEngine:
    from cortex.engine.vllm_engine import VllmConfig, VllmEngine

    options = {k: v for k, v in spec.items() if k not in ("backend", "count")}
    return VllmEngine(engine_id, VllmConfig(**options))


@BACKENDS.register("null")
def _null(engine_id: str, spec: dict[str, Any]) -> BaseEngine:
    from cortex.engine.null import null_engine

    return null_engine(engine_id, spec)


@dataclass(slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    api_key: str | None = None
    max_body_bytes: int = 1 << 20
    grace_s: float = 10.0


@dataclass(slots=True)
class AllocatorSection:
    """The ``allocator:`` section (``policy: cortex-malleable`` only).

    Attributes:
        config: the ``Allocator``'s policy and timing.
        max_engines: engine budget of scale-out (configured engines included);
            None or the configured count: no scale-out.
        template: the engine spec new engines are built like (None: no scale-out).
        standby_urls: servers new ``openai`` engines connect to, in order.
    """

    config: AllocatorConfig = field(default_factory=AllocatorConfig)
    max_engines: int | None = None
    template: dict[str, Any] | None = None
    standby_urls: list[str] = field(default_factory=list)


@dataclass(slots=True)
class CortexConfig:
    policy: str = "cortex"
    workflows: list[CompiledWorkflow] = field(default_factory=list)
    engine_specs: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    slo_s: float = 30.0
    max_queue: int = 256
    load_bound: int = 2
    tool_threads: int = 8
    late: LateOrder | None = None        # late_last / late_last_when_tipped
    databases: dict[str, Path] = field(default_factory=dict)
    db_dirs: tuple[Path, ...] = ()
    run_timeout_factor: float = DEFAULT_TIMEOUT_FACTOR
    server: ServerConfig = field(default_factory=ServerConfig)
    allocator: AllocatorSection | None = None
    source: str = "<config>"

    def make_engines(self) -> dict[str, BaseEngine]:
        """Instantiate (not start) every engine; errors name the engines[i] entry."""
        engines: dict[str, BaseEngine] = {}
        for engine_id, spec in self.engine_specs:
            options = {k: v for k, v in spec.items() if k != "_path"}
            try:
                engines[engine_id] = BACKENDS.get(spec["backend"])(engine_id, options)
            except (TypeError, ValueError, OverflowError) as exc:  # cache_mb: .inf
                raise ConfigError(self.source, spec["_path"],
                                  f"bad engine option: {exc}") from None
        return engines

    def database_access(self) -> DatabaseAccess:
        """The nl2sql tools' database policy for this deployment."""
        from cortex.nl2sql.tools import DatabaseAccess

        return DatabaseAccess(dict(self.databases), self.db_dirs)


def load_config(path: str | Path) -> CortexConfig:
    source = str(path)
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except OSError as exc:
        raise ConfigError(source, "", f"cannot read config: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(source, "", f"invalid YAML: {exc}") from None
    return parse_config(data, source, base_dir=Path(path).parent)


def parse_config(data: dict[str, Any], source: str = "<config>",
                 base_dir: Path | None = None) -> CortexConfig:
    if not isinstance(data, dict):
        raise ConfigError(source, "", "the config must be a mapping")
    policy = data.get("policy", "cortex")
    if policy not in PLACEMENTS:
        raise ConfigError(source, "policy", f"unknown policy {policy!r}; choose one of "
                          f"{', '.join(PLACEMENTS.names())}")
    unknown = sorted(set(data) - set(CONFIG_FIELDS), key=str)
    if unknown:
        raise ConfigError(source, unknown[0], f"unknown field; known: {', '.join(CONFIG_FIELDS)}")
    cfg = CortexConfig(policy=policy, source=source)
    cfg.workflows = _workflows(data.get("workflows", ["nl2sql"]), source, base_dir)
    cfg.engine_specs = _engine_specs(data.get("engines"), source)
    try:
        cfg.make_engines()  # option errors now, naming engines[i], not after start-up
    except ImportError:  # an optional backend (vllm) not installed: its start says so
        pass
    cfg.databases, cfg.db_dirs = _databases(data, source, base_dir)
    if "slo_ms" in data:
        slo = data["slo_ms"]
        if not is_number(slo) or slo <= 0:
            raise ConfigError(source, "slo_ms", f"must be a positive number, got {slo!r}")
        cfg.slo_s = slo / 1000.0
    for key in ("max_queue", "tool_threads"):
        if key in data:
            setattr(cfg, key, _positive_int(data[key], source, key))
    if "load_bound" in data:  # 0: always the engine with the longest cached prefix
        cfg.load_bound = _positive_int(data["load_bound"], source, "load_bound", minimum=0)
    late = data.get("late_last")
    if late is not None and (not is_number(late) or late < 0):
        raise ConfigError(source, "late_last", "must be a number >= 0 (times a call's "
                          f"expected service it may be late and still count), got {late!r}")
    tipped = data.get("late_last_when_tipped", False)
    if not isinstance(tipped, bool):
        raise ConfigError(source, "late_last_when_tipped", f"must be true or false, got {tipped!r}")
    if tipped and late is None:
        raise ConfigError(source, "late_last_when_tipped", "needs late_last: K (how late a "
                          "call may be and still count) to be set")
    if late is not None:
        cfg.late = LateOrder(float(late), tipped)
    factor = data.get("run_timeout_factor", DEFAULT_TIMEOUT_FACTOR)
    if not is_number(factor) or factor < 1:
        raise ConfigError(source, "run_timeout_factor", "must be a number >= 1 (a run times "
                          f"out once this many times its SLO has passed), got {factor!r}")
    cfg.run_timeout_factor = float(factor)
    cfg.server = _server(data.get("server", {}), source)
    if "allocator" in data:
        cfg.allocator = _allocator(data["allocator"], cfg)
    return cfg


def _positive_int(value: Any, source: str, path: str, minimum: int = 1) -> int:
    """``value`` as an integer >= ``minimum``; a float, a string or a YAML bool is an
    error (``int(0.5)`` would silently make a bound of 0)."""
    if not is_int(value) or value < minimum:
        raise ConfigError(source, path, f"must be an integer >= {minimum}, got {value!r}")
    return value


CONFIG_FIELDS = ("policy", "workflows", "engines", "slo_ms", "max_queue", "load_bound",
                 "tool_threads", "late_last", "late_last_when_tipped", "run_timeout_factor",
                 "server", "allocator", "databases", "db_dirs")


def _workflows(raw: Any, source: str, base_dir: Path | None) -> list[CompiledWorkflow]:
    if not isinstance(raw, list):
        raise ConfigError(source, "workflows", "must be a list of 'nl2sql' or workflow "
                          "YAML paths")
    out: list[CompiledWorkflow] = []
    for i, entry in enumerate(raw):
        workflow = _workflow(entry, f"workflows[{i}]", source, base_dir)
        same = [j for j, w in enumerate(out) if w.name == workflow.name]
        if same:
            raise ConfigError(source, f"workflows[{i}]", f"workflow name {workflow.name!r} "
                              f"is already workflows[{same[0]}]'s; each name must be unique")
        out.append(workflow)
    return out


def _databases(data: dict[str, Any], source: str, base_dir: Path | None
               ) -> tuple[dict[str, Path], tuple[Path, ...]]:
    """``databases`` (name -> SQLite file) and ``db_dirs`` (directories), relative paths
    against the config file's directory; every file and directory must exist."""
    from cortex.nl2sql.datasets import DB_IDS

    def place(entry: Any, path: str) -> Path:
        if not isinstance(entry, str) or not entry.strip():
            raise ConfigError(source, path, f"must be a path, got {entry!r}")
        file = Path(entry).expanduser()
        return file if base_dir is None or file.is_absolute() else base_dir / file

    raw_names = data.get("databases") or {}
    if not isinstance(raw_names, dict):
        raise ConfigError(source, "databases", "must be a mapping of database name -> "
                          "SQLite file")
    names: dict[str, Path] = {}
    for name, entry in raw_names.items():
        path = f"databases.{name}"
        if not isinstance(name, str) or not name.strip() or name in DB_IDS:
            raise ConfigError(source, path, f"a database name must be a non-empty string "
                              f"other than the built-ins ({', '.join(DB_IDS)})")
        file = place(entry, path)
        if not file.is_file():
            raise ConfigError(source, path, f"database file {file} does not exist")
        names[name] = file
    raw_dirs = data.get("db_dirs") or []
    if not isinstance(raw_dirs, list):
        raise ConfigError(source, "db_dirs", "must be a list of directories")
    dirs = []
    for i, entry in enumerate(raw_dirs):
        folder = place(entry, f"db_dirs[{i}]")
        if not folder.is_dir():
            raise ConfigError(source, f"db_dirs[{i}]", f"directory {folder} does not exist")
        dirs.append(folder)
    return names, tuple(dirs)


def _workflow(entry: Any, path: str, source: str, base_dir: Path | None) -> CompiledWorkflow:
    if entry == "nl2sql":
        from cortex.nl2sql.workflow import load_agent

        return load_agent()
    if not isinstance(entry, str):
        raise ConfigError(source, path, "must be 'nl2sql' or a path to a workflow YAML file")
    file = Path(entry) if base_dir is None or Path(entry).is_absolute() else base_dir / entry
    if not file.exists():
        raise ConfigError(source, path, f"workflow file {file} does not exist")
    return load_workflow(file)


def _engine_specs(raw: Any, source: str) -> list[tuple[str, dict[str, Any]]]:
    if raw is None:
        raw = [{"backend": "llamacpp", "count": 2}]
    if not isinstance(raw, list) or not raw:
        raise ConfigError(source, "engines", "must be a non-empty list of engine groups")
    out: list[tuple[str, dict[str, Any]]] = []
    for i, group in enumerate(raw):
        path = f"engines[{i}]"
        if isinstance(group, dict) and "backend" in group and group["backend"] is None:
            raise ConfigError(source, f"{path}.backend", "bare null is YAML's None; write "
                              "backend: \"null\" for the zero-cost engine")
        if not isinstance(group, dict) or group.get("backend") not in BACKENDS:
            backend = group.get("backend") if isinstance(group, dict) else group
            raise ConfigError(source, f"{path}.backend", f"unknown backend {backend!r}; choose "
                              f"one of {', '.join(BACKENDS.names())}")
        if group["backend"] == "openai":
            urls = group.get("urls") or ([group["base_url"]] if "base_url" in group else [])
            if not urls:
                raise ConfigError(source, f"{path}.urls", "list the server base URLs")
            items = [dict(group, base_url=u) for u in urls]
        else:
            count = _positive_int(group.get("count", 1), source, f"{path}.count")
            items = [dict(group) for _ in range(count)]
        for item in items:
            item.pop("urls", None)
            item["_path"] = path
            out.append((f"{group['backend']}-{len(out)}", item))
    return out


def _server(raw: Any, source: str) -> ServerConfig:
    import os

    if not isinstance(raw, dict):
        raise ConfigError(source, "server", "must be a mapping")
    known = set(ServerConfig.__dataclass_fields__) | {"api_key_env"}
    unknown = set(raw) - known
    if unknown:
        raise ConfigError(source, f"server.{min(unknown)}", "unknown field")
    options = {k: v for k, v in raw.items() if k != "api_key_env"}
    for key in ("api_key", "api_key_env"):
        value = raw.get(key)
        if value is not None and (not isinstance(value, str) or not value):
            raise ConfigError(source, f"server.{key}", f"must be a non-empty string, got "
                              f"{value!r}")
    if "api_key_env" in raw:
        options["api_key"] = os.environ.get(raw["api_key_env"]) or options.get("api_key")
    server = ServerConfig(**options)
    check_server(server, source)
    return server


def check_server(server: ServerConfig, source: str) -> None:
    """The server fields' types and ranges (the parser, and the server for a config built
    or changed in code, e.g. by ``cortex serve`` flags).

    Raises:
        ConfigError: naming ``server.<field>``.
    """
    if not isinstance(server.host, str) or not server.host:
        raise ConfigError(source, "server.host", f"must be a host name or address, got "
                          f"{server.host!r}")
    if not is_int(server.port) or not 0 <= server.port <= 65535:
        raise ConfigError(source, "server.port", f"must be an integer in 0..65535 (0: any "
                          f"free port), got {server.port!r}")
    _positive_int(server.max_body_bytes, source, "server.max_body_bytes")
    if not is_number(server.grace_s) or server.grace_s < 0:
        raise ConfigError(source, "server.grace_s", f"must be a number of seconds >= 0, "
                          f"got {server.grace_s!r}")


ALLOCATOR_FIELDS = ("policy", "options", "interval_s", "load_alpha", "cost_window_s",
                    "cold_window_s", "workflow_demand", "max_engines", "standby_urls")


def _allocator(raw: Any, cfg: CortexConfig) -> AllocatorSection:
    """Parse the ``allocator:`` section (see the module docstring); needs ``cfg``'s
    policy and engine specs, so it runs after them."""
    source = cfg.source
    if not is_malleable(cfg.policy):
        raise ConfigError(source, "allocator", f"only policy: cortex-malleable has an allocator "
                          f"(policy is {cfg.policy!r}); remove the section or change the policy")
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(source, "allocator", "must be a mapping")
    unknown = sorted(set(raw) - set(ALLOCATOR_FIELDS))
    if unknown:
        raise ConfigError(source, f"allocator.{unknown[0]}",
                          f"unknown field; known: {', '.join(ALLOCATOR_FIELDS)}")
    policy = raw.get("policy", "slo-pressure")
    if policy not in ALLOCATION_POLICIES:
        raise ConfigError(source, "allocator.policy", f"unknown allocation policy {policy!r}; "
                          f"choose one of {', '.join(ALLOCATION_POLICIES.names())}")
    options = raw.get("options") or {}
    if not isinstance(options, dict):
        raise ConfigError(source, "allocator.options", "must be a mapping of the policy's "
                          "options")
    try:  # cortex-malleable gives every LLM stage its own pool, named after it
        build_policy(policy, options).check_pools(
            s for wf in cfg.workflows for s in wf.llm_stages)
    except ValueError as exc:  # PolicyOptionError names the option
        path = "allocator.options" + (f".{exc.option}" if getattr(exc, "option", None) else "")
        raise ConfigError(source, path, str(exc)) from None
    timing: dict[str, float] = {}
    for key, minimum, strict in (("interval_s", 0.0, True), ("load_alpha", 0.0, True),
                                 ("cost_window_s", 0.0, True), ("cold_window_s", 0.0, False)):
        if key not in raw:
            continue
        value = raw[key]
        ok = is_number(value) and (value > minimum if strict else value >= minimum)
        if key == "load_alpha" and ok:
            ok = value <= 1
        if not ok:
            want = "a number in (0, 1]" if key == "load_alpha" else (
                "a positive number of seconds" if strict else "a number of seconds >= 0")
            raise ConfigError(source, f"allocator.{key}", f"must be {want}, got {value!r}")
        timing[key] = float(value)
    flags = {}
    if "workflow_demand" in raw:    # absent: AllocatorConfig's default
        if not isinstance(raw["workflow_demand"], bool):
            raise ConfigError(source, "allocator.workflow_demand",
                              f"must be true or false, got {raw['workflow_demand']!r}")
        flags["workflow_demand"] = raw["workflow_demand"]
    section = AllocatorSection(AllocatorConfig(policy=policy, policy_options=dict(options),
                                               **flags, **timing))
    _scale_out(raw, cfg, section)
    return section


def _scale_out(raw: dict[str, Any], cfg: CortexConfig, section: AllocatorSection) -> None:
    """Fill in the scale-out budget and the spec new engines are built like.

    Without ``standby_urls`` new engines are built like the first engine group
    (embedded backends; ``openai`` cannot start a server); with them, like the
    first ``openai`` group, one per URL.
    """
    source, count = cfg.source, len(cfg.engine_specs)
    urls = raw.get("standby_urls") or []
    if not isinstance(urls, list) or not all(isinstance(u, str) and u for u in urls):
        raise ConfigError(source, "allocator.standby_urls", "must be a list of server base URLs")
    max_engines = raw.get("max_engines")
    if max_engines is not None and (not isinstance(max_engines, int)
                                    or isinstance(max_engines, bool) or max_engines < count):
        raise ConfigError(source, "allocator.max_engines", f"must be an integer >= the {count} "
                          f"configured engines (more: scale out), got {max_engines!r}")
    if urls:
        remote = [spec for _, spec in cfg.engine_specs if spec["backend"] == "openai"]
        if not remote:
            raise ConfigError(source, "allocator.standby_urls", "standby URLs are for the "
                              "openai backend, and no engine group uses it")
        if max_engines is None:
            max_engines = count + len(urls)
        elif max_engines > count + len(urls):
            raise ConfigError(source, "allocator.max_engines", f"{max_engines} engines need "
                              f"{max_engines - count} standby URLs; allocator.standby_urls "
                              f"lists {len(urls)}")
        section.template = {k: v for k, v in remote[0].items() if k != "base_url"}
    elif max_engines is not None and max_engines > count:
        first = cfg.engine_specs[0][1]
        if first["backend"] == "openai":
            raise ConfigError(source, "allocator.standby_urls", "the openai backend cannot "
                              "start servers: list standby server URLs to scale out to")
        section.template = dict(first)
    section.max_engines = max_engines
    section.standby_urls = list(urls)
