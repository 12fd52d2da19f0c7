"""The one grammar of short specs: degradations, filters, methods and training degradations.

``name[:value][,key=value...]``:

* the first item without ``=`` is the entry's positional parameter (``noise:25`` is ``noise:sigma=25``);
* ``key`` alone is a flag, true (``noise:25,clip``); booleans also read ``1/0``, ``true/false``, ``yes/no``,
  ``on/off``;
* ``LOW-HIGH`` (two unsigned numbers, ``noise:0-55``, ``jpeg:10-40``, also as ``noise:sigma=0-55``) is a
  :class:`Range`, accepted only where the caller allows ranges (training draws a value per sample) and only for
  the parameters the table names as ranged.

A table maps each name to ``(positional parameter, anything, {parameter: type})``; :func:`parse_params` returns
the name and the typed parameters. Used by :func:`restorekit.degrade.parse`, :func:`restorekit.filters.parse_filter`,
:mod:`restorekit.methods` and :class:`restorekit.train.data.DegradationSpec`.

>>> parse_params("noise:25,clip", {"noise": ("sigma", None, {"sigma": float, "clip": bool})}, "degradation")
('noise', {'sigma': 25.0, 'clip': True})
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import InputError

__all__ = ["Range", "parse_params", "parse_range", "convert"]

Table = Mapping[str, tuple[str, Any, Mapping[str, type]]]

_RANGE = re.compile(r"^\s*(\d+(?:\.\d*)?)\s*-\s*(\d+(?:\.\d*)?)\s*$")


@dataclass(frozen=True)
class Range:
    """A ``LOW-HIGH`` parameter (``low <= high``; ``55-0`` reads as ``0-55``), drawn uniformly per sample."""

    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.low:g}-{self.high:g}"


def parse_range(text: str) -> Range | None:
    """``"0-55"`` -> ``Range(0, 55)``; None for anything that is not two unsigned numbers joined by ``-``."""
    match = _RANGE.match(text)
    if match is None:
        return None
    lo, hi = (float(v) for v in match.groups())
    return Range(min(lo, hi), max(lo, hi))


def convert(kind: type, text: str, where: str, what: str = "degradation") -> Any:
    """``text`` as a ``kind`` (bool, int, float, str) or an :class:`InputError` naming ``what`` and ``where``."""
    try:
        if kind is bool:
            if text.lower() in ("1", "true", "yes", "on", ""):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        return kind(text)
    except ValueError:
        hint = ""
        if kind in (int, float) and parse_range(text) is not None:
            hint = " (a range LOW-HIGH is drawn per sample, in training degradations only: give one value here)"
        raise InputError(f"{what} {where}: {text!r} is not a valid {kind.__name__}{hint}") from None


def parse_params(
    spec: str,
    table: Table,
    what: str,
    example: str = "",
    *,
    ranged: Mapping[str, Collection[str]] | None = None,
) -> tuple[str, dict[str, Any]]:
    """``"name[:value][,key=value...]"`` against ``table`` -> (name, typed parameters).

    ``ranged`` (name -> the parameters that may be ``LOW-HIGH``) allows ranges: such a value comes back as a
    :class:`Range`; a range elsewhere is an error that names the entries taking one. Without ``ranged`` a range
    is an invalid number, said so.
    """
    name, _, rest = spec.strip().partition(":")
    if name not in table:
        raise InputError(f"unknown {what} {name!r}; use one of {', '.join(table)}{example}")
    positional, _, types = table[name]
    params: dict[str, Any] = {}
    if not types and rest.strip():
        raise InputError(f"{what} {name!r} takes no parameters; give it as {name}, not {spec.strip()!r}")
    for i, item in enumerate(p for p in rest.split(",") if p.strip()):
        key, eq, value = item.strip().partition("=")
        if not eq:
            key, value = (positional, key) if i == 0 and key not in types else (key, "")
        if key not in types:
            raise InputError(f"{what} {name!r} has no parameter {key!r}; it takes {', '.join(types)}")
        bounds = parse_range(value) if ranged is not None else None
        if bounds is not None:
            if key not in ranged.get(name, ()):  # type: ignore[union-attr]
                takers = ", ".join(f"{n} ({', '.join(keys)})" for n, keys in ranged.items() if keys)  # type: ignore[union-attr]
                raise InputError(f"{what} {spec.strip()!r}: only {takers} take a range LOW-HIGH")
            # The low end is checked as the parameter's type (an int parameter needs a whole low end).
            convert(types[key], f"{bounds.low:g}", f"{name}.{key}", what)
            params[key] = bounds
            continue
        params[key] = convert(types[key], value, f"{name}.{key}", what)
    return name, params
