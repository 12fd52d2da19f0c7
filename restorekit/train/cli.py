"""``restorekit-train`` / ``python -m restorekit.train``: argument parsing and one handler per verb.

``restorekit-train fit --preset spatial_rnn.denoise --data DIR --out runs/x --steps 1000`` trains with the
model's paper recipe; ``--config FILE.toml|.json`` sets values and every flag overrides both. Under
``torchrun --nproc_per_node N -m restorekit.train fit ...`` the same command trains with DDP.
``presets`` prints the recipes; ``export`` and ``push`` call :mod:`restorekit.train.publish`.

Every subparser sets ``func(args) -> int``; :func:`main` runs it through :func:`restorekit.errors.run_command`,
so the exit codes and error lines are those of ``restorekit``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

from ..errors import run_command

_STARTED = time.monotonic()  # a time budget counts from here: imports and data loading are part of the run

__all__ = ["add_publish_subcommands", "build_parser", "main"]


_HELP = {
    "model_config": "network config as JSON, merged over the record's (e.g. '{\"channels\": 8}')",
    "loss_args": "loss keyword arguments as JSON (e.g. '{\"edge_weight\": 0.05}')",
    "degradations": "degradations of clean images, several = mixed tasks (noise:0-55 jpeg:10 bicubic:4 rain mask:0.5)",
    "data": "training folders (clean, input/+target/, LR/+HR/) or CSV lists",
    "time_budget": "wall time for the whole run, resumes included (90s, 8m, 1.5h): the schedule, warm-up and EMA "
    "are fitted to it from the measured speed, and the weights are exported when it is up; --steps is then a cap",
    "export_dir": "where a time-budgeted run exports (default <out>/export)",
}


# Each flag is its option's name; these also take the spelling the other commands use for the same thing.
_ALIASES = {"out": ("-o", "--output")}  # `restorekit run -o DIR`, `restorekit-train export -o DIR`


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
        aliases = _ALIASES.get(f.name, ())
        default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
        help_text = _HELP.get(f.name, "") + f" (default: the preset's, else {default!r})"
        kw: dict[str, Any] = {"dest": f.name, "default": None, "help": help_text}
        if isinstance(default, bool):
            group.add_argument(flag, *aliases, action=argparse.BooleanOptionalAction, **kw)
        elif isinstance(default, dict):
            group.add_argument(flag, *aliases, type=_json, metavar="JSON", **kw)
        elif isinstance(default, list):
            kind = float if f.name == "betas" else str
            group.add_argument(flag, *aliases, nargs="+", type=kind, **kw)
        else:
            group.add_argument(flag, *aliases, type=type(default), **kw)


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


def _export(args: argparse.Namespace) -> int:
    from .publish import export_run

    result = export_run(
        args.run,
        args.output,
        checkpoint=args.checkpoint,
        weights=args.weights,
        dtype=args.dtype,
        eval_data=args.eval_data,
        eval_degradation=args.eval_degrade,
        name=args.name,
        repo_id=args.repo_id,
        overwrite=args.overwrite,
    )
    print(f"wrote {result.weights} ({result.size} bytes, sha256 {result.sha256})")
    print(f"wrote {result.card}, {result.record_py}, {result.record_json}")
    print()
    print(result.record_text, end="")
    return 0


def _push(args: argparse.Namespace) -> int:
    from .card import pinned_hub_line
    from .publish import push_folder

    commit = push_folder(
        args.folder,
        args.repo_id,
        revision=args.revision,
        token=args.token,
        private=args.private,
        commit_message=args.message,
    )
    print(f"pushed {args.folder} to {args.repo_id} at commit {commit}")
    line = pinned_hub_line(Path(args.folder), args.repo_id, commit)
    if line is not None:
        print(f"record: {line}")
    return 0


def add_publish_subcommands(subparsers: Any) -> None:
    """Register ``export`` and ``push`` on a ``restorekit-train`` subparsers object."""
    from .. import registry

    p = subparsers.add_parser("export", help="write fp16 weights, a model card and the registry record of a run")
    p.add_argument("run", help="the run folder (config.json, log.jsonl, checkpoints/)")
    p.add_argument("-o", "--output", required=True, help="folder to write the release files into")
    p.add_argument("--checkpoint", default="last", help="'last' (default), a step number, or a .pt file")
    p.add_argument("--weights", choices=("ema", "model"), default="ema", help="EMA weights when present (default)")
    p.add_argument("--dtype", choices=registry.DTYPES, default="float16")
    p.add_argument("--eval-data", help="measure the exported file on this benchmark folder (restorekit eval)")
    p.add_argument(
        "--eval-degrade",
        "--eval-degradation",  # export_run()'s keyword
        help="degradation for a folder of clean images, e.g. noise:25",
    )
    p.add_argument("--name", help="registered model name (default: the one the run was trained for)")
    p.add_argument("--repo-id", help="hub repository for the record (default: the record's)")
    p.add_argument("--overwrite", action="store_true", help="replace release files already in the output folder")
    p.set_defaults(func=_export)

    p = subparsers.add_parser("push", help="upload a folder to a Hugging Face model repo (HF_ENDPOINT, HF_TOKEN)")
    p.add_argument("folder")
    p.add_argument("repo_id", help="namespace/name")
    p.add_argument("--revision", default="main", help="an existing branch (default main)")
    p.add_argument("--token", help="write token (default: HF_TOKEN, then the saved login)")
    p.add_argument("--private", action="store_true", help="create the repository private")
    p.add_argument("-m", "--message", default="Upload restorekit weights", help="commit message")
    p.set_defaults(func=_push)


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
    add_publish_subcommands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run its verb's handler; returns the exit code (:func:`restorekit.errors.run_command`)."""
    args = build_parser().parse_args(argv)
    # Ctrl-C during training stops at the next step and checkpoints (the loop's own handler); one that reaches
    # here came before the loop or during an export.
    kept = "checkpoints already written are kept; `restorekit-train fit` again resumes from the last one"
    return run_command("restorekit-train", lambda: args.func(args), interrupted=kept)


if __name__ == "__main__":
    raise SystemExit(main())
