"""A way to prove a call does not hang: run it in a thread and fail the test when it overstays."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest


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
