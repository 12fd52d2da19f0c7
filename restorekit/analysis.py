"""Measure what is wrong with an image: JPEG quality, noise level, haze, rain, each with a confidence.

>>> from restorekit import analyze
>>> report = analyze("photo.jpg")            # doctest: +SKIP
>>> report.jpeg_quality, report.noise_sigma   # doctest: +SKIP
(75, 3.1)

:func:`analyze` accepts what :class:`~restorekit.Restorer` accepts (a path, a PIL image, a numpy array, a
tensor) and returns an :class:`Analysis`: one :class:`Finding` per kind of degradation. A finding whose
``present`` is None is an honest "unknown": the measurement could not decide.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["KINDS", "Analysis", "Finding", "analyze"]

# The degradations analyze measures, in the order they are reported.
KINDS = ("jpeg", "noise", "haze", "rain")


@dataclass(frozen=True)
class Finding:
    """One measured degradation.

    ``kind``: one of :data:`KINDS`. ``present``: True, False, or None (unknown). ``value``: its strength in
    the kind's own unit (``jpeg``: the quality 1..100; ``noise``: σ on the 0..255 scale, the mean over the
    channels; ``haze``: the detector's score in 0..1; ``rain``: the detector's score in 0..1), None where it
    could not be measured. ``confidence``: 0..1, how far the measurement is from its decision threshold (1:
    certain, e.g. a JPEG quality read from the file's own tables). ``method``: how it was measured, in a few
    words (e.g. ``"quantisation tables (IJG scaling, exact)"``). ``detail``: the measurement's parts
    (per-channel σ, chroma subsampling, ...), JSON-serialisable.
    """

    kind: str
    present: bool | None
    value: float | None = None
    confidence: float = 0.0
    method: str = ""
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "present": self.present,
            "value": self.value,
            "confidence": round(float(self.confidence), 3),
            "method": self.method,
            "detail": dict(self.detail),
        }


@dataclass(frozen=True)
class Analysis:
    """What :func:`analyze` measured on one image: one :class:`Finding` per kind in :data:`KINDS`."""

    findings: tuple[Finding, ...]
    size: tuple[int, int]  # (height, width)
    channels: int  # 1 (grey) or 3 (colour)
    source: str | None = None  # the path, for a file

    def get(self, kind: str) -> Finding:
        for finding in self.findings:
            if finding.kind == kind:
                return finding
        raise KeyError(f"no {kind!r} finding; the kinds are {', '.join(KINDS)}")

    @property
    def noise_sigma(self) -> float | None:
        """The estimated noise σ (0..255 scale) when noise was found, else None."""
        f = self.get("noise")
        return f.value if f.present else None

    @property
    def jpeg_quality(self) -> int | None:
        """The JPEG quality when the image is (or was) a JPEG, else None."""
        f = self.get("jpeg")
        return None if not f.present or f.value is None else int(round(f.value))

    @property
    def degradations(self) -> list[Finding]:
        """The findings that are present, in :data:`KINDS` order."""
        return [f for f in self.findings if f.present]

    @property
    def clean(self) -> bool:
        """True when nothing was found present (unknowns do not count as found)."""
        return not self.degradations

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "size": list(self.size),
            "channels": self.channels,
            "clean": self.clean,
            "findings": [f.to_dict() for f in self.findings],
        }


def analyze(image: Any) -> Analysis:
    """Measure ``image``'s degradations (see the module docstring)."""
    raise NotImplementedError("the estimators are not written yet")
