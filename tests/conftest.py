"""Shared fixtures. No test may touch the real caches in ~/.cache or reach the internet (tests marked
``network`` do, and run only with ``--network``)."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace

import pytest

try:  # tests/ as a package, or as a plain folder on sys.path
    from .servers import FileServer, HubServer
except ImportError:
    from servers import FileServer, HubServer

_OFFLINE_VARS = ("HF_HUB_OFFLINE", "RESTOREKIT_OFFLINE", "TRANSFORMERS_OFFLINE")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--network",
        action="store_true",
        default=False,
        help="also run the tests marked network: they download real upstream files (needs internet; never in CI)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Tests marked network reach the internet: skipped unless asked for, so the suite (and CI) stays offline.
    if config.getoption("--network"):
        return
    skip = pytest.mark.skip(
        reason="needs internet: run with --network (e.g. python -m pytest tests/test_memnet_network.py --network)"
    )
    for item in items:
        if "network" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """Point restorekit's and huggingface_hub's caches at fresh temporary folders for every test."""
    root = tmp_path_factory.mktemp("cache")
    paths = SimpleNamespace(restorekit=root / "restorekit", hf_home=root / "hf", hf_hub=root / "hf" / "hub")
    monkeypatch.setenv("RESTOREKIT_CACHE", str(paths.restorekit))
    monkeypatch.setenv("HF_HOME", str(paths.hf_home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    return paths


def _go_online(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _OFFLINE_VARS:
        monkeypatch.delenv(name, raising=False)
    # huggingface_hub reads HF_HUB_OFFLINE once, at import; a stale True would block every request.
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    # With telemetry on, huggingface_hub 2.x fetches an agent registry from its import-time endpoint (the
    # public hub unless HF_ENDPOINT was already set) the first time it builds request headers: keep tests local.
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)


@pytest.fixture
def hub_server(isolated_cache: SimpleNamespace, monkeypatch: pytest.MonkeyPatch) -> Iterator[HubServer]:
    """A running :class:`HubServer` that ``HF_ENDPOINT`` points at, with empty caches and offline mode off."""
    with HubServer() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("HF_HUB_CACHE", str(isolated_cache.hf_hub))
        monkeypatch.setenv("RESTOREKIT_CACHE", str(isolated_cache.restorekit))
        _go_online(monkeypatch)
        yield server
    _close_hub_session()


@pytest.fixture
def file_server(isolated_cache: SimpleNamespace, monkeypatch: pytest.MonkeyPatch) -> Iterator[FileServer]:
    """A running :class:`FileServer` (upstream URLs), with empty caches and offline mode off."""
    with FileServer() as server:
        _go_online(monkeypatch)
        yield server


def _close_hub_session() -> None:
    # huggingface_hub keeps one pooled HTTP client for the process; drop its connections to the stopped server.
    from huggingface_hub import close_session

    close_session()
