"""What the environment says: restorekit's cache locations, offline and trust flags, the hub endpoint and token,
and the download settings.

The ground floor of the package: it imports nothing from restorekit but :mod:`restorekit.errors`, so any module
(the native ops included) can ask where the cache is without pulling in the registry or the weights code.
Every variable is read when a function is called, never at import; an empty variable counts as unset.

>>> import os
>>> os.environ["RESTOREKIT_CACHE"] = "/tmp/rk-cache"
>>> str(cache_dir())
'/tmp/rk-cache'
>>> del os.environ["RESTOREKIT_CACHE"]
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

from .errors import WeightsError

__all__ = [
    "cache_dir",
    "hf_cache_dir",
    "is_offline",
    "unpinned_allowed",
    "hf_endpoint",
    "hf_token",
    "DownloadSettings",
    "download_settings",
    "DOWNLOAD_DEFAULTS",
]

_TRUE = {"1", "true", "yes", "on"}


def _env(name: str) -> str | None:
    value = os.environ.get(name)
    return value if value else None  # an empty variable counts as unset


def _env_flag(*names: str) -> bool:
    """True when any of the environment variables is set to 1/true/yes/on."""
    return any((os.environ.get(name) or "").strip().lower() in _TRUE for name in names)


# --------------------------------------------------------------------------------------------------- locations


def cache_dir() -> Path:
    """restorekit's cache: ``$RESTOREKIT_CACHE``, else ``$XDG_CACHE_HOME/restorekit``, else ``~/.cache/restorekit``."""
    if (explicit := _env("RESTOREKIT_CACHE")) is not None:
        return Path(explicit).expanduser()
    if (xdg := _env("XDG_CACHE_HOME")) is not None:
        return Path(xdg).expanduser() / "restorekit"
    return Path.home() / ".cache" / "restorekit"


def hf_cache_dir() -> Path | None:
    """The Hugging Face hub cache: ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else None (huggingface_hub's default)."""
    if (hub_cache := _env("HF_HUB_CACHE")) is not None:
        return Path(hub_cache).expanduser()
    if (hf_home := _env("HF_HOME")) is not None:
        return Path(hf_home).expanduser() / "hub"
    return None


# --------------------------------------------------------------------------------------------------- flags


def is_offline() -> bool:
    """True when ``RESTOREKIT_OFFLINE`` or ``HF_HUB_OFFLINE`` is set to 1/true/yes/on."""
    return _env_flag("RESTOREKIT_OFFLINE", "HF_HUB_OFFLINE")


def unpinned_allowed() -> bool:
    """True when ``RESTOREKIT_ALLOW_UNPINNED`` is set to 1/true/yes/on (what ``allow_unpinned=None`` means)."""
    return _env_flag("RESTOREKIT_ALLOW_UNPINNED")


# --------------------------------------------------------------------------------------------------- the hub


def hf_endpoint() -> str | None:
    """``$HF_ENDPOINT`` without a trailing slash; None when unset (huggingface_hub's default applies)."""
    endpoint = _env("HF_ENDPOINT")
    return (endpoint.rstrip("/") or None) if endpoint else None


def hf_token(*, saved_login: bool = True) -> str | None:
    """``$HF_TOKEN``, else (with ``saved_login``) the token ``hf auth login`` saved; None when neither is set."""
    if not saved_login:
        return _env("HF_TOKEN")
    try:
        from huggingface_hub import get_token
    except ImportError:  # pragma: no cover - very old huggingface_hub
        return _env("HF_TOKEN")
    try:
        return get_token()
    except Exception:  # an unreadable token file must not stop a public download
        return _env("HF_TOKEN")


# --------------------------------------------------------------------------------------------------- downloads

# The policy these feed is described in restorekit.download.
DOWNLOAD_DEFAULTS = {
    "RESTOREKIT_TIMEOUT": 30.0,
    "RESTOREKIT_DEADLINE": 1800.0,
    "RESTOREKIT_RETRIES": 3,
    "RESTOREKIT_RETRY_WAIT": 1.0,
}


class DownloadSettings(NamedTuple):
    """How long a download may wait and how often it is retried (:data:`DOWNLOAD_DEFAULTS` when unset)."""

    timeout: float  # RESTOREKIT_TIMEOUT: seconds of silence before connecting or a read gives up
    deadline: float  # RESTOREKIT_DEADLINE: seconds for a whole download, retries included
    retries: int  # RESTOREKIT_RETRIES: retries after the first attempt
    retry_wait: float  # RESTOREKIT_RETRY_WAIT: seconds before the first retry (doubling after)


def _setting(name: str) -> float:
    raw = _env(name)
    default = DOWNLOAD_DEFAULTS[name]
    if raw is None:
        return float(default)
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    minimum = 0.0 if name in ("RESTOREKIT_RETRIES", "RESTOREKIT_RETRY_WAIT") else 1e-3
    if not (value >= minimum) or value == float("inf"):
        raise WeightsError(
            f"{name}={raw!r} is not a usable number of seconds (or retries); unset it or use e.g. {default}"
        )
    return value


def download_settings() -> DownloadSettings:
    """The download settings from the environment; WeightsError naming the variable when one is not a number."""
    return DownloadSettings(
        timeout=_setting("RESTOREKIT_TIMEOUT"),
        deadline=_setting("RESTOREKIT_DEADLINE"),
        retries=int(_setting("RESTOREKIT_RETRIES")),
        retry_wait=_setting("RESTOREKIT_RETRY_WAIT"),
    )
