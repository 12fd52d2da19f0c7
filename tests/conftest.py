"""Shared fixtures. No test may touch the real caches in ~/.cache or reach the internet (tests marked
``network`` do, and run only with ``--network``)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

try:  # tests/ as a package, or as a plain folder on sys.path
    from .image_files import write_images, write_pairs
    from .servers import FileServer, HubServer
except ImportError:
    from image_files import write_images, write_pairs
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


@pytest.fixture(scope="session")
def extension_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the native scan is built: one folder for the whole session, so that it compiles once and the
    processes tests start load it too; ``RESTOREKIT_EXT_CACHE`` set outside keeps it between sessions."""
    import os

    explicit = os.environ.get("RESTOREKIT_EXT_CACHE")
    return Path(explicit) if explicit else tmp_path_factory.mktemp("extensions")


@pytest.fixture(autouse=True)
def isolated_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch, extension_cache: Path
) -> SimpleNamespace:
    """Point restorekit's and huggingface_hub's caches at fresh temporary folders for every test (the native
    scan's build folder excepted: see ``extension_cache``)."""
    root = tmp_path_factory.mktemp("cache")
    paths = SimpleNamespace(restorekit=root / "restorekit", hf_home=root / "hf", hf_hub=root / "hf" / "hub")
    monkeypatch.setenv("RESTOREKIT_CACHE", str(paths.restorekit))
    monkeypatch.setenv("RESTOREKIT_EXT_CACHE", str(extension_cache))
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


# ------------------------------------------------------------------------------------------ tiny models


@pytest.fixture(scope="session")
def tiny_config() -> Callable[..., dict[str, Any]]:
    """``tiny_config(arch, **overrides)``: the architecture's few-hundred-parameter config (``ArchSpec.tiny_config``)
    with ``overrides`` on top; merge it over a record's or the default config where a full config is needed."""
    from restorekit.registry import get_arch

    def make(arch: str, **overrides: Any) -> dict[str, Any]:
        return {**get_arch(arch).tiny_config, **overrides}

    return make


@pytest.fixture(scope="session")
def tiny_model(tiny_config: Callable[..., dict[str, Any]]) -> Callable[..., Any]:
    """``tiny_model(arch, **overrides)``: a randomly initialised network of ``tiny_config(arch, **overrides)``
    (seed torch first where the weights matter)."""
    from restorekit.registry import get_arch

    def make(arch: str, **overrides: Any) -> Any:
        return get_arch(arch).build(**tiny_config(arch, **overrides))

    return make


@pytest.fixture(scope="session")
def tiny_record(tiny_config: Callable[..., dict[str, Any]]) -> Callable[..., Any]:
    """``tiny_record(name, suffix="_tiny", **overrides)``: the record of ``name`` under a new tag, not a default,
    with its architecture's tiny config (and ``overrides``) over the record's; register it with
    ``registry.temporary`` and build it with ``pretrained=False``."""
    import dataclasses

    from restorekit.registry import get_record

    def make(name: str, suffix: str = "_tiny", **overrides: Any) -> Any:
        rec = get_record(name)
        config = {**rec.config, **tiny_config(rec.arch, **overrides)}
        return dataclasses.replace(rec, tag=rec.tag + suffix, default=False, config=config)

    return make


@pytest.fixture
def m2r3(tiny_config: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    """The tiny MemNet config with 2 blocks and 3 recursions: R != M, so a swapped loop bound shows."""
    return tiny_config("memnet", blocks=2, recursions=3)


# ------------------------------------------------------------------------------------------ image folders


@pytest.fixture
def image_folder(tmp_path: Path) -> Callable[..., Path]:
    """``image_folder(name="clean", n=4, size=(24, 32), seed=0, kind="noise", grey=(), names=None)``: a folder of
    seeded PNGs under ``tmp_path`` (``name`` may also be an absolute path); see :mod:`tests.image_files`."""

    def make(name: str | Path = "clean", n: int = 4, size: Any = (24, 32), **kw: Any) -> Path:
        folder = tmp_path / name
        write_images(folder, n, size, **kw)
        return folder

    return make


@pytest.fixture
def paired_folders(tmp_path: Path) -> Callable[..., tuple[Path, Path]]:
    """``paired_folders(name="pairs", n=1, size=(32, 40), clean="target", degraded="input", ...)``: a clean folder
    and a slightly noisy copy side by side under ``tmp_path / name``, the paired layout evaluation reads."""

    def make(name: str | Path = "pairs", n: int = 1, size: tuple[int, int] = (32, 40), **kw: Any) -> tuple[Path, Path]:
        return write_pairs(tmp_path / name, n, size, **kw)

    return make


# ------------------------------------------------------------------------------------------ the commands, in-process


def _in_process(main: Callable[[list[str]], int], capsys: pytest.CaptureFixture[str]) -> Callable[..., Any]:
    def run(*args: object, check: int | None = None) -> subprocess.CompletedProcess:
        argv = [str(a) for a in args]
        capsys.readouterr()  # what the test printed before is not the command's output
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse: --version, --help, usage errors
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            if isinstance(exc.code, str):
                print(exc.code, file=sys.stderr)
        out, err = capsys.readouterr()
        proc = subprocess.CompletedProcess(argv, int(code), out, err)
        if check is not None:
            assert proc.returncode == check, proc.stdout + proc.stderr
        return proc

    return run


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., subprocess.CompletedProcess]:
    """``cli(*args, check=None)``: ``restorekit ARGS`` run in this process by ``restorekit.cli.main``, returned as a
    ``CompletedProcess`` (returncode, stdout, stderr); ``check`` asserts the exit status."""
    from restorekit.cli import main

    return _in_process(main, capsys)


@pytest.fixture
def train_cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., subprocess.CompletedProcess]:
    """``train_cli(*args, check=None)``: ``restorekit-train ARGS`` in this process (``restorekit.train.cli.main``)."""
    from restorekit.train.cli import main

    return _in_process(main, capsys)
