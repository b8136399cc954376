"""Shared fixtures for the NL2SQL tests: the built-in databases, generated once per session."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cortex.nl2sql.datasets import ensure_databases


@pytest.fixture(scope="session")
def cache_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CORTEX_CACHE_DIR root holding the generated databases under nl2sql/v1."""
    root = tmp_path_factory.mktemp("cortex-cache")
    ensure_databases(root / "nl2sql" / "v1")
    return root


@pytest.fixture(scope="session")
def dbs(cache_root: Path) -> dict[str, Path]:
    return ensure_databases(cache_root / "nl2sql" / "v1")


@pytest.fixture()
def sales_copy(dbs: dict[str, Path], tmp_path: Path) -> Path:
    """A private copy of the sales database that a test may attack."""
    target = tmp_path / "sales.sqlite"
    shutil.copyfile(dbs["sales"], target)
    return target


@pytest.fixture()
def builtin_env(cache_root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point CORTEX_CACHE_DIR at the session cache so named databases resolve there."""
    monkeypatch.setenv("CORTEX_CACHE_DIR", str(cache_root))
    return cache_root
