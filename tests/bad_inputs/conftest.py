"""Fixtures of the bad-input and fault corpus: fast models, and a way to prove a call does not hang."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch

from restorekit import registry
from restorekit.registry import get_arch, get_record
from restorekit.restorer import Restorer


def tiny_record(name: str, suffix: str = "_corpus") -> registry.WeightRecord:
    """The record of ``name`` with its architecture's few-hundred-parameter config (random init in tests)."""
    rec = get_record(name)
    spec = get_arch(rec.arch)
    return dataclasses.replace(rec, tag=rec.tag + suffix, default=False, config={**rec.config, **spec.tiny_config})


@pytest.fixture(scope="module")
def tiny_sr() -> Iterator[Restorer]:
    """A random-init tiny MSRN x2 (any colour input, fast); registered only while a module uses it, so that no
    other test sees it in list_models()."""
    rec = tiny_record("msrn.sr_x2")
    with registry.temporary(None, rec):
        torch.manual_seed(0)
        yield Restorer(rec.name, pretrained=False, device="cpu")


@pytest.fixture(scope="module")
def denoiser() -> Restorer:
    """The bundled spatial_rnn.denoise: real weights, offline, ~0.3 MB."""
    return Restorer("spatial_rnn.denoise", device="cpu")


def finishes(fn: Callable[[], Any], seconds: float = 10.0) -> Any:
    """Run ``fn`` in a thread and return (or raise) its outcome; fail the test if it is still running after
    ``seconds`` (the thread is a daemon, so a hang cannot keep the test session alive)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed back to the caller below
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"still running after {seconds} s: it hangs")
    if "error" in box:
        raise box["error"]
    return box["value"]
