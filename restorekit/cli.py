"""The ``restorekit`` command. Argument parsing only: every action is a library call.

restorekit run msrn.sr_x4 photos/ -o out/
restorekit run spatial_rnn.inpaint photos/ -o out/ --mask masks/
restorekit run auto photos/ -o out/ --explain
restorekit list --task sr
restorekit info msrn.sr_x4
restorekit download msrn.sr_x2 msrn.sr_x4
restorekit convert MSRN_x4.pt msrn_x4.safetensors --model msrn.sr_x4
restorekit convert MemNet_M6R6_80C64_GD-0000.params memnet_gd.safetensors --model memnet.denoise_s50
restorekit eval bicubic --data ../shared/data/sr/Set5 --scale 4
restorekit analyze photo.jpg scans/ --json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from ._version import __version__


def _tile(value: str) -> int | str | None:
    if value == "auto":
        return "auto"
    try:
        n = int(value)
    except ValueError:
        msg = f"tile must be 'auto', 0 (whole image) or a size in pixels, not {value!r}"
        raise argparse.ArgumentTypeError(msg) from None
    if n < 0:
        raise argparse.ArgumentTypeError("tile must not be negative")
    return n or None


def _batch(value: str) -> int | str:
    if value == "auto":
        return value
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"--batch takes 'auto' or a whole number >= 1, not {value!r}")
    return n


def _value_range(value: str) -> tuple[float, float]:
    lo, sep, hi = value.partition(":")
    try:
        if not sep:
            raise ValueError
        pair = (float(lo), float(hi))
    except ValueError:
        raise argparse.ArgumentTypeError(f"give the range as LO:HI, e.g. 0:255 or -1:1, not {value!r}") from None
    if not pair[0] < pair[1]:
        raise argparse.ArgumentTypeError(f"LO must be below HI, got {value!r}")
    return pair


_DEVICE_HELP = "auto (cuda, then mps, then cpu; the default), cpu, cuda, cuda:N, mps"
_DTYPE_HELP = (
    "auto (the default: float32, or a half precision the model validates, on a GPU), float32, float16, bfloat16"
)
_UNPINNED_HELP = (
    "fetch weights whose upstream publishes no checksum, trusting them on first use (default: only with "
    "RESTOREKIT_ALLOW_UNPINNED=1)"
)
_COMPILE_HELP = (
    "run the network through torch.compile (slow first image per size; faster on some networks: docs/performance.md)"
)
_PROGRESS_HELP = "progress bars for downloads, tiles and images (default: when stderr is a terminal)"


def _shared_options(parser: argparse.ArgumentParser, *, model: bool = True) -> None:
    """The options every entry point takes (restorekit.options), as flags: --device, --dtype, --allow-unpinned,
    --progress/--no-progress. Each defaults to the keyword's default, so unset flags leave the library's meaning."""
    if model:
        parser.add_argument("--device", default="auto", help=_DEVICE_HELP)
        parser.add_argument("--dtype", default="auto", help=_DTYPE_HELP)
    parser.add_argument("--allow-unpinned", action=argparse.BooleanOptionalAction, default=None, help=_UNPINNED_HELP)
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None, help=_PROGRESS_HELP)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="restorekit", description="Pretrained image restoration on any image size.")
    p.add_argument("--version", action="version", version=f"restorekit {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    r = sub.add_parser("run", help="restore image files, folders or globs into a folder")
    r.add_argument(
        "model",
        help="arch.tag (e.g. msrn.sr_x4), an architecture name, auto (measure each image and pick the model; "
        "--task narrows it, --explain prints why), or a method: bicubic (with --scale), identity, "
        "nearest (with --mask), l0smooth[:LAMBDA]",
    )
    r.add_argument("inputs", nargs="+", metavar="INPUT", help="files, folders (searched recursively) or globs")
    r.add_argument("-o", "--output", required=True, metavar="DIR", help="folder for the results (created)")
    r.add_argument("--task", help="narrow an architecture name to a task")
    r.add_argument("--scale", type=int, help="narrow an architecture name to a scale; the bicubic method's scale")
    r.add_argument("--weights", metavar="PATH", help="use this local weight file instead of the registered ones")
    _shared_options(r)
    r.add_argument("--tile", type=_tile, default="auto", help="auto, 0 for the whole image, or a tile size in px")
    r.add_argument("--compile", action="store_true", help=_COMPILE_HELP)
    r.add_argument(
        "--mask",
        metavar="M",
        help="inpainting/colourisation: a mask file (one input) or a folder of masks with the inputs' names (or "
        "stem.png); white = known, black = to fill",
    )
    r.add_argument("--overwrite", action="store_true", help="redo outputs that already exist")
    r.add_argument("--explain", action="store_true", help="auto: print what was measured and chosen for each file")
    r.add_argument(
        "--download",
        action="store_true",
        help="auto: also choose models whose weights are not here yet (fetched and verified on first use); "
        "without it auto uses only bundled and cached weights",
    )
    r.add_argument("--lam", type=float, help="l0smooth only: the L0 weight lambda (default 0.02)")
    r.add_argument(
        "--input-range",
        type=_value_range,
        metavar="LO:HI",
        help="float images (e.g. float TIFF) whose values are not in 0..1: their range, e.g. 0:255 or -1:1",
    )
    r.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="local: in this process (the default); ray: on a Ray cluster or all cores here, one model per actor "
        '(pip install "restorekit[ray]"; see docs/scale.md)',
    )
    r.add_argument(
        "--ray-address",
        metavar="ADDR",
        help="--engine ray: the cluster to join (auto on one of its nodes, ray://HOST:10001); default: "
        "$RAY_ADDRESS, else a local Ray",
    )
    r.add_argument(
        "--actors", type=int, metavar="N", help="--engine ray: models at once (default: one per GPU, else per CPU)"
    )
    r.add_argument(
        "--batch",
        type=_batch,
        default="auto",
        metavar="N",
        help="restore up to N images of one size in one network call (fewer when memory is short; default auto: "
        "the model's measured default for the device, 1 on the CPU, where batches are slower); the results equal "
        "one at a time to float rounding",
    )
    r.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="threads decoding the next images and writing finished ones while the model runs (default: 2 when "
        "the model leaves a core free for them or runs on a GPU, else 0; 0: none); the outputs are the same either way",
    )
    r.set_defaults(func=_run)

    ls = sub.add_parser(
        "list", help="list registered models (run and eval also take the methods bicubic, identity, nearest, l0smooth)"
    )
    ls.add_argument("--task")
    ls.add_argument("--arch")
    ls.add_argument("--published", action="store_true", help="only models that have weights (bundled or fetchable)")
    ls.set_defaults(func=_list)

    info = sub.add_parser("info", help="everything known about a model")
    info.add_argument("name")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(func=_info)

    dl = sub.add_parser("download", help="fetch and verify weights now (for an air-gapped machine later)")
    dl.add_argument("names", nargs="+", metavar="NAME")
    _shared_options(dl, model=False)  # a download runs nothing: no device or dtype
    dl.set_defaults(func=_download)

    cv = sub.add_parser("convert", help="convert an authors' checkpoint to restorekit's safetensors")
    cv.add_argument("src")
    cv.add_argument("dst")
    cv.add_argument("--model", help="the registered model it belongs to (gives arch and config)")
    cv.add_argument("--arch", help="architecture, when no registered model fits")
    cv.add_argument("--config", type=json.loads, default=None, help="JSON config for --arch")
    cv.add_argument(
        "--from",
        dest="format",
        default="auto",
        metavar="FORMAT",
        help="the file's format: auto (from its suffix), torch, safetensors, caffe, paddle, mxnet",
    )
    cv.add_argument("--overwrite", action="store_true", help="replace DST if it exists")
    cv.set_defaults(func=_convert)

    ev = sub.add_parser("eval", help="measure PSNR/SSIM of a model or a baseline on a benchmark folder")
    ev.add_argument(
        "model", help="arch.tag, an architecture name, or a method: bicubic, identity, nearest, l0smooth[:LAMBDA]"
    )
    ev.add_argument("--data", required=True, metavar="DIR", help="x{s}/HR + x{s}/LR, HR + LR, input + target, or clean")
    ev.add_argument("--task", help="narrow an architecture name to a task; the task a baseline stands in for")
    ev.add_argument("--scale", type=int, help="SR scale (picks x{scale}/ folders and the model)")
    ev.add_argument(
        "--degrade",
        "--degradation",  # evaluate()'s keyword
        metavar="SPEC",
        help="for clean images: noise:25, jpeg:10, bicubic:4, rain, mask:0.5, hints:0.03 ...",
    )
    ev.add_argument("--convention", help="y_shave_scale, y_shave_scale:as_rgb, full_image, y_full (default: task's)")
    ev.add_argument("--seed", type=int, default=0, help="seed of the degradation (per image: seed and file name)")
    ev.add_argument("--weights", metavar="PATH", help="evaluate this local weight file")
    _shared_options(ev)
    ev.add_argument("--tile", type=_tile, default="auto", help="auto, 0 for the whole image, or a tile size in px")
    ev.add_argument("--compile", action="store_true", help=_COMPILE_HELP)
    ev.add_argument("--json", metavar="PATH", help="write the results as JSON")
    ev.add_argument("--csv", metavar="PATH", help="write the per-image results as CSV")
    ev.add_argument("--target", metavar="FILTER", help="score against a filter of the clean images, e.g. l0smooth:0.02")
    ev.add_argument("--overwrite", action="store_true", help="replace the --json/--csv files if they exist")
    ev.set_defaults(func=_eval)

    an = sub.add_parser("analyze", help="measure what is wrong with images: JPEG quality, noise, haze, rain")
    an.add_argument("inputs", nargs="+", metavar="IMG", help="image files, folders or globs")
    an.add_argument("--json", action="store_true", help="print a JSON list of the analyses")
    an.set_defaults(func=_analyze)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run its verb's handler; returns the exit code (:func:`restorekit.errors.run_command`)."""
    from .errors import run_command

    args = build_parser().parse_args(argv)
    return run_command(
        "restorekit", lambda: args.func(args), interrupted="finished outputs are kept, run again to resume"
    )


def _run(args: argparse.Namespace) -> int:
    from .batch import run_batch
    from .errors import InputError
    from .methods import runner

    if args.engine == "ray":
        return _run_ray(args)
    if args.ray_address is not None or args.actors is not None:
        from .errors import InputError

        raise InputError("--ray-address and --actors are options of --engine ray; add --engine ray or drop them")
    restorer = runner(
        args.model,
        args.task,
        scale=args.scale,
        weights=args.weights,
        device=args.device,
        dtype=args.dtype,
        tile=args.tile,
        allow_unpinned=args.allow_unpinned,
        progress=args.progress,
        lam=args.lam,
        compile=args.compile,
        download=args.download,
        batch=args.batch,
    )
    if args.explain:
        if not hasattr(restorer, "on_plan"):
            raise InputError(f"--explain is for the auto model (restorekit run auto ...), not {args.model}")
        restorer.on_plan = lambda plan: print(plan.explain(), flush=True)
    report = run_batch(
        restorer,
        args.inputs,
        args.output,
        overwrite=args.overwrite,
        progress=args.progress,
        masks=args.mask,
        input_range=args.input_range,
        workers=args.workers,
    )
    for src, reason in report.failed:
        print(f"restorekit: failed: {src}: {reason}", file=sys.stderr)
    print(report.summary())
    return 0 if report.ok else 1


def _run_ray(args: argparse.Namespace) -> int:
    from .distributed import run_ray
    from .errors import InputError

    flags = (("--compile", args.compile), ("--explain", args.explain), ("--download", args.download))
    unsupported = [flag for flag, on in flags if on]
    if unsupported:
        raise InputError(f"{' and '.join(unsupported)} work with the local engine only; drop them or --engine ray")

    report = run_ray(
        args.model,
        args.inputs,
        args.output,
        task=args.task,
        scale=args.scale,
        weights=args.weights,
        device=args.device,
        dtype=args.dtype,
        tile=args.tile,
        allow_unpinned=args.allow_unpinned,
        lam=args.lam,
        overwrite=args.overwrite,
        masks=args.mask,
        input_range=args.input_range,
        actors=args.actors,
        address=args.ray_address,
        progress=args.progress,
        batch=args.batch,
    )
    for src, reason in report.failed:  # as the local engine reports
        print(f"restorekit: failed: {src}: {reason}", file=sys.stderr)
    print(report.summary())
    return 0 if report.ok else 1


def _list(args: argparse.Namespace) -> int:
    from .registry import get_record, list_models

    names = list_models(task=args.task, arch=args.arch, published=True if args.published else None)
    # The weights column says which models run with pretrained weights and where those come from.
    print(f"{'MODEL':<24} {'TASK':<10} {'SCALE':<5}  {'WEIGHTS':<27} DESCRIPTION")
    for name in names:
        rec = get_record(name)
        print(f"{name:<24} {rec.task:<10} x{rec.scale:<4}  {rec.source:<27} {rec.description}")
    if any(not get_record(name).published for name in names):
        print("\n'none': no weights are published for that model yet; it runs with weights=FILE (--weights) or")
        print("pretrained=False. 'unpinned, opt in': see `restorekit info NAME`.")
    return 0


def _info(args: argparse.Namespace) -> int:
    from .registry import format_info, model_info

    data = model_info(args.name)
    print(json.dumps(data, indent=2, default=str) if args.json else format_info(data))
    return 0


def _download(args: argparse.Namespace) -> int:
    from .fetch import resolve
    from .registry import get_record

    for name in args.names:
        path = resolve(get_record(name), progress=args.progress, allow_unpinned=args.allow_unpinned)
        print(f"{get_record(name).name}: {path}")
    return 0


def _convert(args: argparse.Namespace) -> int:
    from .weights import convert

    if not (args.model or args.arch):
        raise SystemExit("restorekit convert: give --model NAME or --arch ARCH")
    path = convert(
        args.src,
        args.dst,
        model=args.model,
        arch=args.arch,
        config=args.config,
        format=args.format,
        overwrite=args.overwrite,
    )
    print(path)
    return 0


def _eval(args: argparse.Namespace) -> int:
    from .errors import OutputExistsError
    from .evaluate import evaluate

    result = evaluate(
        args.model,
        args.data,
        task=args.task,
        scale=args.scale,
        degradation=args.degrade,
        convention=args.convention,
        weights=args.weights,
        device=args.device,
        dtype=args.dtype,
        tile=args.tile,
        seed=args.seed,
        allow_unpinned=args.allow_unpinned,
        progress=args.progress,
        target=args.target,
        compile=args.compile,
    )
    print(result.table())
    wanted = [p for p in (args.json, args.csv) if p]
    for p in wanted:  # before printing anything: either every requested file is written, or none is touched
        if not args.overwrite and Path(p).exists():
            raise OutputExistsError(f"{p} already exists; pass --overwrite to replace it")
    if args.json:
        print(f"wrote {result.write_json(args.json, overwrite=args.overwrite)}")
    if args.csv:
        print(f"wrote {result.write_csv(args.csv, overwrite=args.overwrite)}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


def _analyze(args: argparse.Namespace) -> int:
    from .analysis import analyze
    from .batch import expand_inputs
    from .errors import RestorekitError

    pairs, failed = expand_inputs(args.inputs)
    results = []
    for src, _ in pairs:
        try:
            results.append(analyze(src))
        except (RestorekitError, OSError) as exc:
            failed.append((str(src), str(exc)))
    if args.json:
        print(json.dumps([a.to_dict() for a in results], indent=2))
    else:
        for a in results:
            print(f"{a.source}  {a.size[1]}x{a.size[0]}, {a.channels} channel(s): {'clean' if a.clean else 'degraded'}")
            print(f"  {'KIND':<6} {'PRESENT':<8} {'VALUE':>8} {'CONF':>5}  METHOD")
            for f in a.findings:
                present = {True: "yes", False: "no", None: "unknown"}[f.present]
                value = "-" if f.value is None else f"{f.value:g}"
                print(f"  {f.kind:<6} {present:<8} {value:>8} {f.confidence:>5.2f}  {f.method}")
    for src, reason in failed:
        print(f"restorekit: failed: {src}: {reason}", file=sys.stderr)
    return 1 if failed else 0
