"""The model registry: typed records of architectures and pretrained weights.

Every pretrained model is named ``arch.tag`` (``msrn.sr_x4``). An architecture registers one
:class:`ArchSpec` (how to build the network and what it needs from the caller) and any number
of :class:`WeightRecord` entries (where its weights come from and what they were made for), each one row of
its file's weight table, ``WeightRecord.named("msrn.sr_x4", ...)``, with its figures from :func:`psnr_ssim`.
Architecture files register themselves when :mod:`restorekit.archs` is imported; lookups import
it lazily so ``import restorekit`` stays cheap.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields
from types import MappingProxyType
from typing import Any

from .errors import UnknownModelError
from .policy import ArchPolicy

__all__ = [
    "ArchSpec",
    "HubSource",
    "UrlSource",
    "BundledSource",
    "Metric",
    "WeightRecord",
    "CONVENTIONS",
    "psnr_ssim",
    "register_arch",
    "register_weights",
    "get_arch",
    "get_record",
    "list_models",
    "list_archs",
    "model_info",
]

TASKS = ("sr", "denoise", "deblur", "derain", "dehaze", "jpeg", "smooth", "inpaint", "colorize", "all_in_one")
# The dtypes a model can be validated for and run in, by name: WeightRecord.dtypes, --dtype, export's cast.
# restorekit.options.DTYPES maps these and DTYPE_ALIASES to torch dtypes (torch is not imported here).
DTYPES = ("float32", "float16", "bfloat16")
DTYPE_ALIASES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "half": "float16"}
GREY_ON_COLOR = ("y", "rgb")  # WeightRecord.grey_on_color
# The metric conventions by name: Metric.convention, `restorekit eval --convention`. restorekit.metrics implements
# each one (get_convention; its presets are these names, tested); ":raw" / ":as_rgb" choose how a grey image's Y
# is taken. Named here so the registry checks records without importing torch.
CONVENTIONS = ("y_shave_scale", "full_image", "y_full")
CONVENTION_OPTIONS = ("raw", "as_rgb")
# What a network can be conditioned on besides the image (ArchSpec.condition; restorekit.feeding packs it): a mask of
# the known pixels (inpainting), or colour hints with the mask of where they are (colourisation).
CONDITIONS = ("mask", "hints")
_HEX40 = re.compile(r"^[0-9a-f]{40}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def _freeze(mapping: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True)
class ArchSpec:
    """How to build one network family and what the inference contract needs from it.

    ``build(**config)`` returns the ``nn.Module``; ``select_output`` picks the restored image
    out of a multi-output network's return value; ``filter_checkpoint(state_dict, config)``
    maps an authors' checkpoint onto our key names (``None``: keys already match).

    What the network is fed is declared here, not probed on the module: ``condition`` (a name in
    :data:`CONDITIONS`, or None for the image alone; a function of the config where a parameter chooses it,
    read through :meth:`condition_for`) and ``size_multiple``; :class:`restorekit.feeding.Feeding` packs the input.
    """

    name: str
    build: Callable[..., Any]
    default_config: Mapping[str, Any]
    tiny_config: Mapping[str, Any]  # a few-hundred-parameter variant for tests
    paper: str
    value_range: float = 1.0  # the network's input/output range (MSRN works in 0..255)
    # Radius in input pixels (a number, or a function of the config when the depth varies); None = global.
    receptive_field: int | Callable[[Mapping[str, Any]], int] | None = None
    # Measured peak activation bytes per input pixel at fp32 (docs/performance.md): a number, or a
    # function of the config when it varies (an SR network's upsampler grows with the scale).
    footprint: float | Callable[[Mapping[str, Any]], float] = 4096.0
    select_output: Callable[[Any], Any] | None = None
    filter_checkpoint: Callable[[dict[str, Any], Mapping[str, Any]], dict[str, Any]] | None = None
    config_for_scale: Callable[[int], Mapping[str, Any]] | None = None
    # What the network takes besides the image: "mask" / "hints" (one more input channel, the mask), None: nothing.
    condition: str | Callable[[Mapping[str, Any]], str | None] | None = None
    # Input sides must divide by this: the Restorer pads to it and tiles in steps of it (every record agrees).
    size_multiple: int = 1
    # The measured inference policy per device type (memory format; where torch.compile pays): restorekit/policy.py.
    policy: ArchPolicy = ArchPolicy()

    def condition_for(self, config: Mapping[str, Any]) -> str | None:
        """What a network built from ``config`` (over the defaults) is conditioned on: ``"mask"``, ``"hints"`` or
        None (the image alone)."""
        c = self.condition
        value = c({**self.default_config, **config}) if callable(c) else c
        if value is not None and value not in CONDITIONS:
            raise ValueError(f"{self.name}: condition must be None or one of {CONDITIONS}, not {value!r}")
        return value

    def footprint_for(self, config: Mapping[str, Any]) -> float:
        return float(self.footprint(config) if callable(self.footprint) else self.footprint)

    def receptive_field_for(self, config: Mapping[str, Any]) -> int | None:
        """The radius for ``config`` (over the defaults); None for a global receptive field."""
        rf = self.receptive_field
        return int(rf({**self.default_config, **config})) if callable(rf) else rf

    def __post_init__(self) -> None:
        object.__setattr__(self, "default_config", _freeze(self.default_config))
        object.__setattr__(self, "tiny_config", _freeze(self.tiny_config))
        if not callable(self.condition) and self.condition is not None and self.condition not in CONDITIONS:
            raise ValueError(f"{self.name}: condition must be None or one of {CONDITIONS}, not {self.condition!r}")
        if isinstance(self.size_multiple, bool) or not isinstance(self.size_multiple, int) or self.size_multiple < 1:
            raise ValueError(f"{self.name}: size_multiple must be a positive int, not {self.size_multiple!r}")
        if not isinstance(self.policy, ArchPolicy):
            raise ValueError(f"{self.name}: policy must be a restorekit.policy.ArchPolicy, not {self.policy!r}")


@dataclass(frozen=True)
class HubSource:
    """A safetensors file in a hub repository, pinned to a commit and a sha256.

    A :class:`WeightRecord` holds one only once the file was pushed (both set); export's release record has
    ``revision=None`` until ``restorekit-train push`` prints the commit.
    """

    repo_id: str
    filename: str
    revision: str | None = None  # 40-hex commit; None until pushed
    sha256: str | None = None
    size: int | None = None

    @property
    def published(self) -> bool:
        return self.revision is not None and self.sha256 is not None


@dataclass(frozen=True)
class UrlSource:
    """An authors' checkpoint at an upstream URL, converted once to our format.

    Integrity is pinned by ``sha256`` or, for files in a git repository, by the git blob SHA-1
    (``sha1("blob <size>\\0" + bytes)``), which is what the repository itself records. An upstream that
    publishes no digest is declared ``pinned=False``: ``resolve()`` then refuses it unless the caller opts
    in to trust on first use (``RESTOREKIT_ALLOW_UNPINNED=1`` or ``allow_unpinned=True``).
    """

    url: str
    format: str = "torch"  # a name in restorekit.convert.FORMATS: torch, safetensors, caffe, paddle
    sha256: str | None = None
    git_blob_sha1: str | None = None
    size: int | None = None
    pinned: bool = True  # False: no published digest exists; never set it to skip pinning one that does
    # Files the reader needs beside this one, each pinned the same way (an MXNet graph, PREFIX-symbol.json,
    # beside PREFIX-0000.params): downloaded and verified with it, and saved next to it under their upstream
    # file names, which is where the reader looks for them.
    companions: tuple[UrlSource, ...] = ()


@dataclass(frozen=True)
class BundledSource:
    """A file shipped inside the package, in ``restorekit/weights/``."""

    filename: str
    sha256: str
    size: int


@dataclass(frozen=True)
class Metric:
    dataset: str
    metric: str  # "psnr" | "ssim"
    value: float
    convention: str  # a name in CONVENTIONS (restorekit.metrics), e.g. "y_shave_scale"
    source: str = "measured"  # "measured" by restorekit, or "reported" (paper / authors' README)

    def __post_init__(self) -> None:
        base, colon, option = self.convention.partition(":")
        if base not in CONVENTIONS or (colon and option not in CONVENTION_OPTIONS):
            close = difflib.get_close_matches(self.convention, CONVENTIONS, n=1, cutoff=0.5)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(
                f"{self.dataset} {self.metric}: unknown metric convention {self.convention!r}; the conventions are "
                f"{', '.join(CONVENTIONS)} (restorekit.metrics; y_shave_scale:as_rgb takes grey images' Y as RGB)."
                + hint
            )


def psnr_ssim(
    convention: str, *rows: tuple[str, float] | tuple[str, float, float], source: str = "reported"
) -> tuple[Metric, ...]:
    """A table of figures as :class:`Metric` entries: each row is ``(dataset, psnr)`` or ``(dataset, psnr, ssim)``,
    all under one ``convention``; ``source`` is "reported" (a paper's table) or "measured".

    >>> [(m.metric, m.value) for m in psnr_ssim("y_shave_scale", ("Set5", 31.74, 0.8893))]
    [('psnr', 31.74), ('ssim', 0.8893)]
    """
    out: list[Metric] = []
    for dataset, *values in rows:
        if not 1 <= len(values) <= 2:
            raise ValueError(f"{dataset}: a row is (dataset, psnr) or (dataset, psnr, ssim), got {values}")
        out += [Metric(dataset, metric, v, convention, source) for metric, v in zip(("psnr", "ssim"), values)]
    return tuple(out)


@dataclass(frozen=True)
class WeightRecord:
    """Everything known about one pretrained model."""

    arch: str
    tag: str
    task: str
    description: str
    config: Mapping[str, Any] = field(default_factory=dict)
    scale: int = 1
    in_channels: int = 3
    out_channels: int = 3
    size_multiple: int | None = None  # None: the architecture's (ArchSpec.size_multiple), set at registration
    dtypes: tuple[str, ...] = ("float32",)  # validated inference dtypes
    params: int | None = None  # parameter count of the full network (checked by the tests)
    hub: HubSource | None = None
    bundled: BundledSource | None = None
    upstream: UrlSource | None = None
    license: str = "unknown"
    origin: str = ""
    paper: str = ""
    metrics: tuple[Metric, ...] = ()
    default: bool = False  # the tag an architecture name alone resolves to
    notes: str = ""
    # The network itself runs at scale 1 on an image the Restorer first bicubic-upsamples by ``scale``
    # (MemNet's SR models, trained on bicubic-upsampled inputs, one network for x2/x3/x4).
    pre_upsample: bool = False
    # Shown once per process (a UserWarning) the first time load_model uses these weights: license terms
    # a user must not miss, such as a non-commercial restriction.
    license_notice: str = ""
    # How a one-channel network treats a colour image: "y" restores the BT.601 Y and carries CbCr over (the
    # SR and JPEG papers' protocol); "rgb" runs every RGB channel through it (a grey denoiser: noise sits
    # in all three channels, each with the sigma the network was trained for).
    grey_on_color: str = "y"

    @property
    def net_scale(self) -> int:
        """The scale of the network's own output (1 for pre-upsampled SR)."""
        return 1 if self.pre_upsample else self.scale

    @classmethod
    def named(cls, name: str, **fields: Any) -> WeightRecord:
        """The record of the model ``name`` (``"arch.tag"``): how an architecture file writes each row of its weight
        table, so that the full name is in the source (``grep -rn '"msrn.sr_x4"' restorekit/archs`` finds it)."""
        arch, dot, tag = name.partition(".")
        if not (arch and dot and tag) or "." in tag:
            raise ValueError(f"a model name is 'arch.tag', got {name!r}")
        return cls(arch=arch, tag=tag, **fields)

    def __post_init__(self) -> None:
        object.__setattr__(self, "config", _freeze(self.config))
        if self.task not in TASKS:
            raise ValueError(f"{self.name}: task {self.task!r} is not one of {TASKS}")
        bad = [d for d in self.dtypes if d not in DTYPES]
        if bad or "float32" not in self.dtypes:
            raise ValueError(f"{self.name}: dtypes must include float32 and come from {DTYPES}, got {self.dtypes}")
        if self.hub and self.hub.revision is not None and not _HEX40.match(self.hub.revision):
            raise ValueError(f"{self.name}: hub revision must be a 40-hex commit, got {self.hub.revision!r}")
        if self.hub and not self.hub.published:
            raise ValueError(
                f"{self.name}: a hub source names the commit (revision) and sha256 of a file that was pushed; "
                "a model that is not on the hub has hub=None"
            )
        for digest in (
            self.hub and self.hub.sha256,
            self.bundled and self.bundled.sha256,
            self.upstream and self.upstream.sha256,
        ):
            if digest and not _HEX64.match(digest):
                raise ValueError(f"{self.name}: sha256 must be 64 lowercase hex digits, got {digest!r}")
        if self.upstream and self.upstream.git_blob_sha1 and not _HEX40.match(self.upstream.git_blob_sha1):
            raise ValueError(f"{self.name}: git blob SHA-1 must be 40 hex digits")
        if self.grey_on_color not in GREY_ON_COLOR:
            raise ValueError(f"{self.name}: grey_on_color must be one of {GREY_ON_COLOR}, got {self.grey_on_color!r}")
        for extra in self.upstream.companions if self.upstream else ():
            if not (extra.sha256 or extra.git_blob_sha1) or extra.companions:
                raise ValueError(f"{self.name}: companion {extra.url} needs a pinned digest (and no companions)")
            if extra.sha256 and not _HEX64.match(extra.sha256):
                raise ValueError(f"{self.name}: sha256 must be 64 lowercase hex digits, got {extra.sha256!r}")
            if extra.git_blob_sha1 and not _HEX40.match(extra.git_blob_sha1):
                raise ValueError(f"{self.name}: git blob SHA-1 must be 40 hex digits")
        if self.upstream:
            digest = self.upstream.sha256 or self.upstream.git_blob_sha1
            if self.upstream.pinned and not digest:
                raise ValueError(
                    f"{self.name}: an upstream URL needs a pinned sha256 or git blob SHA-1 "
                    "(or pinned=False when the upstream publishes none)"
                )
            if not self.upstream.pinned and digest:
                raise ValueError(f"{self.name}: upstream has a digest, so it is pinned; drop pinned=False")

    @property
    def name(self) -> str:
        return f"{self.arch}.{self.tag}"

    @property
    def published(self) -> bool:
        """True when at least one source can deliver verified weights."""
        return bool(self.bundled or (self.hub and self.hub.published) or self.upstream)

    @property
    def source(self) -> str:
        """Where the weights come from first, in words (what ``restorekit list`` shows): ``bundled``, ``hub``,
        ``authors' (pinned URL)``, ``authors' (unpinned, opt in)``, or ``none (random init only)``."""
        if self.bundled:
            return "bundled"
        if self.hub and self.hub.published:
            return "hub"
        if self.upstream:
            return "authors' (pinned URL)" if self.upstream.pinned else "authors' (unpinned, opt in)"
        return "none (random init only)"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "config":
                value = dict(value)
            elif f.name == "metrics":
                value = [asdict(m) for m in value]
            elif value is not None and hasattr(value, "__dataclass_fields__"):
                value = asdict(value)
            out[f.name] = value
        out["name"] = self.name
        out["published"] = self.published
        out["source"] = self.source
        return out


_ARCHS: dict[str, ArchSpec] = {}
_RECORDS: dict[str, WeightRecord] = {}
_loaded = False


def _ensure_loaded() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        from . import archs  # noqa: F401  (registers every architecture)


def register_arch(spec: ArchSpec) -> ArchSpec:
    if spec.name in _ARCHS and _ARCHS[spec.name] is not spec:
        raise ValueError(f"architecture {spec.name!r} is registered twice")
    _ARCHS[spec.name] = spec
    return spec


def register_weights(*records: WeightRecord) -> None:
    for rec in records:
        if rec.arch not in _ARCHS:
            raise ValueError(f"{rec.name}: register architecture {rec.arch!r} first")
        if rec.size_multiple is None:  # the architecture declares it (the one the Restorer uses)
            rec = dataclasses.replace(rec, size_multiple=_ARCHS[rec.arch].size_multiple)
        elif rec.size_multiple != _ARCHS[rec.arch].size_multiple:
            raise ValueError(
                f"{rec.name}: size_multiple {rec.size_multiple} contradicts its architecture's "
                f"(ArchSpec.size_multiple = {_ARCHS[rec.arch].size_multiple})"
            )
        if rec.name in _RECORDS:
            raise ValueError(f"model {rec.name!r} is registered twice")
        if rec.default and any(r.default for r in _RECORDS.values() if r.arch == rec.arch):
            raise ValueError(f"{rec.name}: architecture {rec.arch!r} already has a default tag")
        _RECORDS[rec.name] = rec


def unregister(name: str) -> None:
    """Remove a record or a whole architecture (tests use this to clean up)."""
    _RECORDS.pop(name, None)
    if name in _ARCHS:
        del _ARCHS[name]
        for key in [k for k, r in _RECORDS.items() if r.arch == name]:
            del _RECORDS[key]


@contextlib.contextmanager
def temporary(spec: ArchSpec | None = None, *records: WeightRecord) -> Iterator[None]:
    """Register an architecture and/or records for the duration of a ``with`` block."""
    _ensure_loaded()
    if spec is not None:
        register_arch(spec)
    register_weights(*records)
    try:
        yield
    finally:
        for rec in records:
            unregister(rec.name)
        if spec is not None:
            unregister(spec.name)


def _suggest(name: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return hint + " Run `restorekit list` (or restorekit.list_models()) to see every model."


def get_arch(name: str) -> ArchSpec:
    _ensure_loaded()
    try:
        return _ARCHS[name]
    except KeyError:
        raise UnknownModelError(f"Unknown architecture {name!r}." + _suggest(name, sorted(_ARCHS))) from None


def get_record(name: str, task: str | None = None, *, scale: int | None = None) -> WeightRecord:
    """Resolve ``arch.tag``, or an architecture name narrowed by ``task``/``scale``.

    >>> get_record("msrn", scale=2).name
    'msrn.sr_x2'
    """
    _ensure_loaded()
    if name in _RECORDS:
        rec = _RECORDS[name]
        for what, want, have in (("task", task, rec.task), ("scale", scale, rec.scale)):
            if want is not None and want != have:
                raise UnknownModelError(
                    f"Model {name!r} has {what} {have!r}, not {want!r}." + _suggest(name, sorted(_RECORDS))
                )
        return rec
    if "." in name:
        arch, _, tag = name.partition(".")
        if arch in _ARCHS:
            tags = sorted(r.name for r in _RECORDS.values() if r.arch == arch)
            raise UnknownModelError(
                f"Unknown tag {tag!r} for architecture {arch!r}; its models are: {', '.join(tags) or 'none'}."
                + _suggest(name, tags)
            )
        raise UnknownModelError(f"Unknown model {name!r}." + _suggest(name, sorted(_RECORDS) + sorted(_ARCHS)))
    if name not in _ARCHS:
        raise UnknownModelError(f"Unknown model {name!r}." + _suggest(name, sorted(_ARCHS) + sorted(_RECORDS)))
    cands = [r for r in _RECORDS.values() if r.arch == name]
    if task is not None:
        cands = [r for r in cands if r.task == task]
    if scale is not None:
        cands = [r for r in cands if r.scale == scale]
    if not cands:
        have = ", ".join(f"{r.name} (task={r.task}, scale={r.scale})" for r in _RECORDS.values() if r.arch == name)
        raise UnknownModelError(
            f"Architecture {name!r} has no model with task={task!r}, scale={scale!r}; it has: {have}."
        )
    if len(cands) == 1:
        return cands[0]
    defaults = [r for r in cands if r.default]
    if defaults:
        return defaults[0]
    raise UnknownModelError(
        f"{name!r} is ambiguous: {', '.join(r.name for r in cands)}. Name one, or narrow with task= or scale=."
    )


def list_archs() -> list[str]:
    _ensure_loaded()
    return sorted(_ARCHS)


def list_models(task: str | None = None, arch: str | None = None, *, published: bool | None = None) -> list[str]:
    """Names of registered models, optionally filtered by task, architecture or availability."""
    _ensure_loaded()
    if arch is not None:
        get_arch(arch)  # raise with suggestions on a typo
    if task is not None and task not in TASKS:
        raise UnknownModelError(f"Unknown task {task!r}; tasks are: {', '.join(TASKS)}.")
    out = []
    for rec in _RECORDS.values():
        if (
            (task is None or rec.task == task)
            and (arch is None or rec.arch == arch)
            and (published is None or rec.published == published)
        ):
            out.append(rec.name)
    return sorted(out)


def model_info(name: str, task: str | None = None, *, scale: int | None = None, as_dict: bool = True) -> dict[str, Any]:
    """Everything known about a model, as plain data: sources, digests, license, metrics, the architecture's paper,
    value range and receptive field. Nothing is printed; :func:`format_info` gives the text ``restorekit info``
    prints. (``as_dict`` is accepted for older callers and changes nothing.)

    >>> model_info("msrn.sr_x4")["license"]  # doctest: +SKIP
    'MIT'
    """
    rec = get_record(name, task, scale=scale)
    info = rec.to_dict()
    spec = get_arch(rec.arch)
    info["arch_paper"] = spec.paper
    info["value_range"] = spec.value_range
    info["receptive_field"] = spec.receptive_field_for(rec.config)
    return info


def format_info(info: Mapping[str, Any]) -> str:
    """The text ``restorekit info`` prints for :func:`model_info`'s data: one ``key  value`` line per known field."""
    lines = [f"{info['name']}: {info['description']}"]
    order = [
        "task",
        "scale",
        "in_channels",
        "out_channels",
        "size_multiple",
        "dtypes",
        "params",
        "license",
        "paper",
        "origin",
        "published",
        "source",
        "grey_on_color",
        "config",
        "hub",
        "bundled",
        "upstream",
        "metrics",
        "notes",
    ]
    for key in order:
        value = info.get(key)
        if value in (None, "", (), [], {}) or (key == "grey_on_color" and info.get("in_channels") != 1):
            continue  # (how a colour image is fed matters only to a one-channel network)
        if isinstance(value, (dict, list, tuple)):
            value = json.dumps(value, default=str)
        lines.append(f"  {key:<14} {value}")
    return "\n".join(lines)
