"""API keys: required beyond loopback (refuse to start without one), optional on loopback."""
from __future__ import annotations

from pathlib import Path

import httpx
import openai
import pytest

from cortex.cli import main as cli_main
from cortex.config import ConfigError, load_config
from cortex.server.serve import CortexServer, check_server_config, is_loopback
from tests.server.helpers import is_ready, running_server, wait_until, write_config

KEY = "s3cret-key"


@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("localhost", True),
                                            ("::1", True), ("0.0.0.0", False),
                                            ("10.1.2.3", False), ("::", False)])
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_refuses_to_listen_beyond_loopback_without_a_key(tmp_path: Path, capsys) -> None:
    path = write_config(tmp_path, server={"host": "0.0.0.0"})
    with pytest.raises(ConfigError, match="server.api_key"):
        check_server_config(load_config(path))
    with pytest.raises(ConfigError, match="beyond loopback"):
        CortexServer(load_config(path))
    assert cli_main(["serve", "--config", str(path)]) == 2
    assert "without an API key" in capsys.readouterr().err


def test_key_from_the_environment_via_the_cli(tmp_path: Path, capsys) -> None:
    path = write_config(tmp_path)
    assert cli_main(["serve", "--config", str(path), "--api-key-env", "CORTEX_TEST_NO_SUCH_VAR"
                     ]) == 2
    assert "CORTEX_TEST_NO_SUCH_VAR is not set" in capsys.readouterr().err


def test_beyond_loopback_with_a_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORTEX_TEST_KEY", KEY)
    path = write_config(tmp_path, server={"host": "0.0.0.0", "api_key_env": "CORTEX_TEST_KEY"})
    with running_server(path, wait_ready=False) as server:
        url = server.url.replace("0.0.0.0", "127.0.0.1")
        with httpx.Client(base_url=url) as http:
            wait_until(lambda: is_ready(url))
            assert http.get("/v1/pools").status_code == 401
            good = http.get("/v1/pools", headers={"Authorization": f"Bearer {KEY}"})
            assert good.status_code == 200


def test_key_on_loopback(tmp_path: Path) -> None:
    path = write_config(tmp_path, server={"api_key": KEY})
    with running_server(path) as server, httpx.Client(base_url=server.url) as http:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
            response = http.post("/v1/runs", json={"workflow": "chain"}, headers=headers)
            assert response.status_code == 401
            assert response.headers["www-authenticate"] == "Bearer"
            assert response.json()["error"]["code"] == "invalid_api_key"
        for public in ("/healthz", "/readyz", "/", "/static/dashboard.js"):
            assert http.get(public).status_code == 200
        for private in ("/metrics", "/v1/dashboard", "/v1/models", "/v1/runs"):
            assert http.get(private).status_code == 401
            assert http.get(private, headers={"Authorization": f"Bearer {KEY}"}
                            ).status_code == 200
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{server.url}/v1", api_key="wrong", max_retries=0
                          ).models.list()
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0)
        reply = client.chat.completions.create(model="draft",
                                               messages=[{"role": "user", "content": "q"}])
        assert reply.choices[0].message.content == "hello world"


def test_no_key_needed_on_loopback_without_one(http: httpx.Client) -> None:
    assert http.get("/v1/pools").status_code == 200



@pytest.mark.parametrize("host", ["0.0.0.0", "127.0.0.1"])
@pytest.mark.parametrize("key", ["   ", "\t\n", " s3cret-key", "s3cret-key\n"])
def test_refuses_a_key_no_client_could_send(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys, host: str, key: str) -> None:
    monkeypatch.setenv("CORTEX_TEST_KEY", key)
    path = write_config(tmp_path, server={"host": host, "api_key_env": "CORTEX_TEST_KEY"})
    with pytest.raises(ConfigError, match="server.api_key: .*no client could authenticate"):
        check_server_config(load_config(path))
    path = write_config(tmp_path, server={"host": host, "api_key": key})
    with pytest.raises(ConfigError, match="no client could authenticate"):
        CortexServer(load_config(path))
    assert cli_main(["serve", "--config", str(path), "--api-key-env", "CORTEX_TEST_KEY"]) == 2
    err = capsys.readouterr().err
    assert "server.api_key" in err and "no client could authenticate" in err
    assert key.strip() not in err or not key.strip()  # the key itself is not echoed
