"""``restorekit-train`` / ``python -m restorekit.train``: argument parsing only.

``restorekit-train fit --preset spatial_rnn.denoise --data DIR --out runs/x --steps 1000`` trains with the
model's paper recipe; ``--config FILE.toml|.json`` sets values and every flag overrides both. Under
``torchrun --nproc_per_node N -m restorekit.train fit ...`` the same command trains with DDP.

Other modules add subcommands: each name in :data:`SUBCOMMAND_MODULES` is imported and its
``add_subcommands(subparsers)`` called; every subparser sets ``func(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import MISSING, fields
from typing import Any

from ..errors import RestorekitError

_STARTED = time.monotonic()  # a time budget counts from here: imports and data loading are part of the run

__all__ = ["SUBCOMMAND_MODULES", "build_parser", "main"]

SUBCOMMAND_MODULES: tuple[str, ...] = ("restorekit.train.publish",)

_HELP = {
    "model_config": "network config as JSON, merged over the record's (e.g. '{\"channels\": 8}')",
    "loss_args": "loss keyword arguments as JSON (e.g. '{\"edge_weight\": 0.05}')",
    "degradations": "degradations of clean images, several = mixed tasks (noise:0-55 jpeg:10 bicubic:4 rain mask:0.5)",
    "data": "training folders (clean, input/+target/, LR/+HR/) or CSV lists",
    "time_budget": "wall time for the whole run, resumes included (90s, 8m, 1.5h): the schedule, warm-up and EMA "
    "are fitted to it from the measured speed, and the weights are exported when it is up; --steps is then a cap",
    "export_dir": "where a time-budgeted run exports (default <out>/export)",
}


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from None


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    from .config import TrainConfig

    group = parser.add_argument_group("training options (override --config and the preset)")
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
        help_text = _HELP.get(f.name, "") + f" (default: the preset's, else {default!r})"
        kw: dict[str, Any] = {"dest": f.name, "default": None, "help": help_text}
        if isinstance(default, bool):
            group.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
        elif isinstance(default, dict):
            group.add_argument(flag, type=_json, metavar="JSON", **kw)
        elif isinstance(default, list):
            kind = float if f.name == "betas" else str
            group.add_argument(flag, nargs="+", type=kind, **kw)
        else:
            group.add_argument(flag, type=type(default), **kw)


def _fit(args: argparse.Namespace) -> int:
    from .config import TrainConfig, resolve
    from .loop import fit

    overrides = {f.name: getattr(args, f.name) for f in fields(TrainConfig)}
    cfg = resolve(args.preset, file=args.config, overrides=overrides)
    summary = fit(cfg, progress=not args.quiet, started=_STARTED)
    if not args.quiet:
        print(json.dumps(summary))
    return 0


def _presets(args: argparse.Namespace) -> int:
    from .config import PRESETS

    names = [args.name] if args.name else list(PRESETS)
    for name in names:
        print(f"{name}: {json.dumps(PRESETS[name])}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="restorekit-train", description="Train and fine-tune restorekit models.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("fit", help="train a model (resumes from <out>/checkpoints/last.pt)")
    p.add_argument("--preset", help="the registered model to train, e.g. spatial_rnn.denoise (its paper recipe)")
    p.add_argument("--config", help="a .toml or .json file of training options")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    _add_config_flags(p)
    p.set_defaults(func=_fit)
    p = sub.add_parser("presets", help="print the paper recipe of every model (or one)")
    p.add_argument("name", nargs="?")
    p.set_defaults(func=_presets)
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).add_subcommands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except RestorekitError as exc:
        print(f"restorekit-train: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
