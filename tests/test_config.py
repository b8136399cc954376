from __future__ import annotations

import pytest

from cortex.config import ConfigError, load_config, parse_config
from cortex.pool.pool import LateOrder
from cortex.runtime.build import start_engines


def test_example_config_loads():
    cfg = load_config("examples/cortex.yaml")
    assert cfg.policy == "cortex" and [w.name for w in cfg.workflows] == ["nl2sql"]
    assert [eid for eid, _ in cfg.engine_specs] == ["llamacpp-0", "llamacpp-1"]


@pytest.mark.parametrize("data, where, what", [
    ({"policy": "fastest"}, "policy", "unknown policy 'fastest'"),
    ({"engines": [{"backend": "tpu"}]}, "engines[0].backend", "unknown backend 'tpu'"),
    ({"engines": [{"backend": "llamacpp", "count": 0}]}, "engines[0].count", "integer >= 1"),
    ({"engines": [{"backend": "openai"}]}, "engines[0].urls", "list the server base URLs"),
    ({"workflows": ["missing.yaml"]}, "workflows[0]", "does not exist"),
    ({"max_queue": -1}, "max_queue", "integer >= 1"),
    ({"max_queue": True}, "max_queue", "integer >= 1"),
    ({"load_bound": 0.5}, "load_bound", "integer >= 0"),
    ({"tool_threads": "8"}, "tool_threads", "integer >= 1"),
    ({"slo_ms": True}, "slo_ms", "positive number"),
    ({"slo_ms": 0}, "slo_ms", "positive number"),
    ({"engines": [{"backend": "llamacpp", "count": True}]}, "engines[0].count", "integer >= 1"),
    ({"server": {"port": "8080"}}, "server.port", "0..65535"),
    ({"server": {"port": 70000}}, "server.port", "0..65535"),
    ({"server": {"host": 5}}, "server.host", "host name or address"),
    ({"server": {"grace_s": -1}}, "server.grace_s", ">= 0"),
    ({"server": {"max_body_bytes": "1MB"}}, "server.max_body_bytes", "integer >= 1"),
    ({"server": {"api_key": 12345}}, "server.api_key", "non-empty string"),
    ({"server": {"api_key_env": ""}}, "server.api_key_env", "non-empty string"),
    ({"max_queu": 1}, "max_queu", "unknown field; known: policy, workflows"),
    ({1: "x", "max_queu": 1}, "1", "unknown field"),  # mixed key types: no TypeError
    ({"load_bound": -1}, "load_bound", "integer >= 0"),
    ({"engines": [{"backend": "llamacpp", "cache_mb": float("inf")}]}, "engines[0]",
     "bad engine option"),
    ({"slo_ms": float("inf")}, "slo_ms", "positive number"),
    ({"run_timeout_factor": float("nan")}, "run_timeout_factor", "number >= 1"),
    ({"late_last": float("inf")}, "late_last", "number >= 0"),
    ({"engines": [{"backend": "llamacpp", "cache_mb": -5}]}, "engines[0]",
     "cache_capacity_bytes must be an integer >= 0"),
    ({"engines": [{"backend": "llamacpp", "n_ctx": "big"}]}, "engines[0]", "n_ctx"),
    ({"engines": [{"backend": "null", "max_concurrency": 0}]}, "engines[0]",
     "max_concurrency"),
    ({"workflows": ["nl2sql", "nl2sql"]}, "workflows[1]", "already workflows[0]'s"),
    ({"databases": {"hr": "x.sqlite"}}, "databases.hr", "other than the built-ins"),
    ({"databases": {"prod": "missing.sqlite"}}, "databases.prod", "does not exist"),
    ({"databases": ["a.sqlite"]}, "databases", "mapping of database name"),
    ({"db_dirs": ["no/such/dir"]}, "db_dirs[0]", "does not exist"),
    ({"db_dirs": "data"}, "db_dirs", "list of directories"),
    ({"server": {"hots": "0.0.0.0"}}, "server.hots", "unknown field"),
    ({"late_last": -1}, "late_last", "number >= 0"),
    ({"late_last": True}, "late_last", "number >= 0"),
    ({"late_last": 1, "late_last_when_tipped": "yes"}, "late_last_when_tipped", "true or false"),
    ({"late_last_when_tipped": True}, "late_last_when_tipped", "needs late_last"),
    ({"run_timeout_factor": 0.5}, "run_timeout_factor", "number >= 1"),
    ({"run_timeout_factor": True}, "run_timeout_factor", "number >= 1"),
    ({"run_timeout_factor": "2"}, "run_timeout_factor", "number >= 1"),
])
def test_bad_config_names_the_field(data, where, what):
    with pytest.raises(ConfigError) as info:
        parse_config(data, source="cortex.yaml")
    message = str(info.value)
    assert message.startswith(f"cortex.yaml: {where}:") and what in message


async def test_late_last_reaches_the_slack_pools_only(tmp_path):
    from cortex.runtime.build import build_runtime

    cfg = parse_config({"policy": "cortex", "late_last": 0, "late_last_when_tipped": True,
                        "engines": [{"backend": "null", "count": 2}]})
    assert cfg.late == LateOrder(0.0, when_tipped=True) and parse_config({}).late is None
    runtime = await build_runtime(cfg)
    try:
        orders = {name: pool.late for name, pool in runtime.controller.pools.items()}
    finally:
        await runtime.close()
    assert orders["generate"] == orders["fix"] == LateOrder(0.0, when_tipped=True)
    assert orders["tools"] is None  # an FCFS executor pool keeps its order


async def test_run_timeout_factor_reaches_the_orchestrator():
    from cortex.runtime.build import build_runtime

    assert parse_config({}).run_timeout_factor == 5.0
    cfg = parse_config({"run_timeout_factor": 1.5,
                        "engines": [{"backend": "null", "count": 2}]})
    runtime = await build_runtime(cfg)
    try:
        orchestrator = runtime.controller.orchestrator
        run, _ = orchestrator.admit("nl2sql", {"question": "q", "db": "d"}, now=10.0,
                                     slo_s=2.0)
    finally:
        await runtime.close()
    assert orchestrator.timeout_factor == 1.5
    assert run.timeout_at == pytest.approx(10.0 + 1.5 * 2.0)


async def test_missing_model_file_names_the_engine_entry(tmp_path):
    cfg = parse_config({"engines": [{"backend": "llamacpp", "count": 1,
                                     "model": str(tmp_path / "nope.gguf")}]}, "cortex.yaml")
    with pytest.raises(ConfigError) as info:
        await start_engines(cfg)
    assert "engines[0]" in str(info.value) and "nope.gguf" in str(info.value)


async def test_unreachable_url_fails_at_start():
    cfg = parse_config({"engines": [{"backend": "openai", "urls": ["http://127.0.0.1:9"],
                                     "model": "m"}]}, "cortex.yaml")
    with pytest.raises(ConfigError) as info:
        await start_engines(cfg)
    assert "engines[0]" in str(info.value) and "127.0.0.1:9" in str(info.value)


async def test_databases_and_db_dirs_become_the_runtime_database_policy(tmp_path):
    from cortex.nl2sql.tools import database_access, resolve_db, set_database_access
    from cortex.runtime.build import build_runtime

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.sqlite").write_bytes(b"")
    (tmp_path / "prod.sqlite").write_bytes(b"")
    (tmp_path / "cortex.yaml").write_text(
        "databases: {prod: prod.sqlite}\ndb_dirs: [data]\n"
        "engines: [{backend: 'null', count: 2}]\n")
    cfg = load_config(tmp_path / "cortex.yaml")  # relative to the config file
    assert cfg.databases == {"prod": tmp_path / "prod.sqlite"}
    assert cfg.db_dirs == (tmp_path / "data",)
    previous = database_access()
    runtime = await build_runtime(cfg)
    try:
        assert resolve_db("prod") == tmp_path / "prod.sqlite"
        assert resolve_db("a.sqlite") == (tmp_path / "data" / "a.sqlite").resolve()
    finally:
        await runtime.close()
        set_database_access(previous)


def test_whole_file_errors_name_the_file_without_an_empty_field(tmp_path):
    bad = tmp_path / "c.yaml"
    bad.write_text("policy: [unclosed\n")
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    assert str(info.value).startswith(f"{bad}: invalid YAML")
    with pytest.raises(ConfigError, match=r"^cortex.yaml: the config must be a mapping$"):
        parse_config([1], source="cortex.yaml")


def test_a_huge_integer_is_a_named_error_not_an_overflow():
    for huge in (10**400, -(10**400)):  # math.isfinite raised OverflowError on them
        with pytest.raises(ConfigError, match="slo_ms: must be a positive number"):
            parse_config({"slo_ms": huge})
