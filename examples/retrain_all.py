"""Retrain every restorekit-trained model at once on one GPU, within a wall-time budget, and measure the results.

The five models whose weights restorekit ships from its own training (``spatial_rnn.denoise``, ``.smooth_l0``,
``.inpaint``, ``.colorize`` and ``dsrir.all_in_one``) train concurrently on one device, each with
``restorekit-train fit --time-budget`` (bf16 autocast and channels_last on CUDA), export fp16 safetensors, and are
measured with the benchmark scripts ``tests/benchmarks/eval_spatial_rnn.py`` and ``eval_dsrir.py`` beside the
figures of the weights shipped in the package.

    # once, where the images are: a compact, bit-exact pack (lossless WebP) of the training and test images
    python examples/retrain_all.py pack --data ../shared/data -o .train_pack
    # on the GPU machine, from the repository root (the pack travels with the working tree)
    python examples/retrain_all.py run --pack .train_pack --out OUT --budget 8m
    # the same on a CPU at tiny size, as the test suite does
    python examples/retrain_all.py run --pack PACK --out OUT --budget 90s --device cpu --tiny --limit 2

``run`` writes at most eight files into ``--out``: the five ``*.safetensors``, ``summary.json`` (per model: steps,
patches/s, every eval row with its command, the shipped figures and whether the new weights are better),
``report.md`` (the same as a table) and ``logs.tar.gz`` (each run's config, log and output). The budget covers the
whole command: unpacking, the L0 targets of ``smooth_l0`` (computed on the device by ``restorekit run
l0smooth``), training and evaluation (``--eval-reserve`` of it is kept for the evaluation).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "tests" / "benchmarks"

# What the pack holds: training images (BSD200 + T91, never a test image) and the test sets the evaluation reads.
PACKED = ("train/BSD200", "train/T91", "denoise/CBSD68", "derain/Rain100L_3/input", "derain/Rain100L_3/target")
TRAIN = ("train/BSD200", "train/T91")
LIMIT_BYTES = 64 << 20  # what travels to a GPU machine with the working tree

# The recipes of the shipped weights (docs/spatial_rnn.md, docs/mprnet_dsrir.md), with the step count replaced by
# the time budget. Each value list is appended to `restorekit-train fit --preset NAME`.
_RNN = ["--optimizer", "adam", "--lr", "5e-4", "--schedule", "cosine", "--min-lr", "1e-6", "--warmup-steps", "100"]
_RNN += ["--batch-size", "16", "--patch-size", "64", "--ema-decay", "0.999", "--weight-decay", "0"]
JOBS: dict[str, list[str]] = {
    "spatial_rnn.denoise": [*_RNN, "--degradations", "noise:0-50"],
    "spatial_rnn.smooth_l0": [*_RNN],
    "spatial_rnn.inpaint": [*_RNN],
    "spatial_rnn.colorize": [*_RNN],
    "dsrir.all_in_one": [
        *("--lr", "5e-4", "--warmup-steps", "200", "--min-lr", "1e-6", "--ema-decay", "0.999"),
        *("--batch-size", "16", "--patch-size", "128"),  # the paper's first progressive stage
    ],
}


def _pixels_digest(img: Image.Image) -> str:
    arr = np.asarray(img)
    return hashlib.sha256(f"{arr.shape}{arr.dtype}".encode() + arr.tobytes()).hexdigest()


# ------------------------------------------------------------------------------------------------ pack


def pack(data: Path, out: Path) -> int:
    """Re-encode the images the run needs as lossless WebP under ``out`` (same folders, same stems)."""
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"{out} is not empty; remove it or pick another folder")
    manifest: dict[str, dict[str, str]] = {}
    total = 0
    for rel in PACKED:
        src = data / rel
        files = sorted(p for p in src.glob("*.png")) if src.is_dir() else []
        if not files:
            raise SystemExit(f"{src} holds no PNG images; pass --data pointing at the shared data folder")
        (out / rel).mkdir(parents=True, exist_ok=True)
        for p in files:
            with Image.open(p) as im:
                im.load()
                if im.mode not in ("RGB", "L"):
                    im = im.convert("RGB")
                buf = io.BytesIO()
                im.save(buf, "WEBP", lossless=True, quality=100, method=4)
                back = Image.open(io.BytesIO(buf.getvalue()))
                back.load()
                if back.mode != im.mode:
                    back = back.convert(im.mode)
                digest = _pixels_digest(im)
                if _pixels_digest(back) != digest:
                    raise SystemExit(f"{p}: WebP did not round-trip losslessly")
            (out / rel / f"{p.stem}.webp").write_bytes(buf.getvalue())
            manifest[f"{rel}/{p.name}"] = {"mode": im.mode, "pixels_sha256": digest}
            total += len(buf.getvalue())
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"packed {len(manifest)} images into {out}: {total / 2**20:.1f} MiB")
    tree = _tree_bytes()
    if tree is not None and tree + total > LIMIT_BYTES:
        print(f"warning: with the working tree ({tree / 2**20:.1f} MiB) this is over the 64 MiB a GPU run can carry")
    return 0


def _tree_bytes() -> int | None:
    try:
        files = subprocess.run(
            ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True, check=True
        ).stdout.split(b"\0")
    except (OSError, subprocess.CalledProcessError):
        return None
    return sum((ROOT / f.decode()).stat().st_size for f in files if f and (ROOT / f.decode()).is_file())


def unpack(packed: Path, data: Path) -> int:
    """Write the pack back as the original PNGs (names and pixels checked against the manifest)."""
    manifest = json.loads((packed / "manifest.json").read_text())
    for name, info in manifest.items():
        rel = Path(name)
        with Image.open(packed / rel.parent / f"{rel.stem}.webp") as im:
            im.load()
            if im.mode != info["mode"]:
                im = im.convert(info["mode"])
            if _pixels_digest(im) != info["pixels_sha256"]:
                raise SystemExit(f"{name}: the packed pixels do not match the manifest")
            (data / rel.parent).mkdir(parents=True, exist_ok=True)
            im.save(data / rel)
    return len(manifest)


# ------------------------------------------------------------------------------------------------ run


def _env(device: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    if device == "cpu":  # several processes share the cores: one thread each, not all of them each
        env["OMP_NUM_THREADS"] = "1"
    return env


def _cmd(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def _tiny_args(name: str) -> list[str]:
    from restorekit.registry import get_arch, get_record

    tiny = dict(get_arch(get_record(name).arch).tiny_config)
    return ["--model-config", json.dumps(tiny), "--patch-size", "16", "--batch-size", "2"]


def _shipped_figures(name: str) -> dict[str, float]:
    from restorekit.registry import get_record

    return {f"{m.dataset} {m.metric}": m.value for m in get_record(name).metrics if m.source == "measured"}


def run(args: argparse.Namespace) -> int:
    t_start = time.monotonic()
    budget = _seconds(args.budget)
    reserve = _seconds(args.eval_reserve) if args.eval_reserve else max(30.0, 0.2 * budget)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="retrain_"))
    env = _env(args.device)
    names = args.models or list(JOBS)
    try:
        data = work / "data"
        n = unpack(Path(args.pack), data)
        print(f"[{time.monotonic() - t_start:6.1f}s] unpacked {n} images", flush=True)
        train_dirs = [str(data / t) for t in TRAIN]
        if "spatial_rnn.smooth_l0" in names:  # paired data: each training image and its L0-smoothed target
            l0 = work / "l0data"
            l0_run = _cmd("restorekit", "run", "l0smooth", *train_dirs, "-o", str(l0 / "target"), "--lam", "0.02")
            subprocess.run([*l0_run, "--device", args.device, "--no-progress"], env=env, check=True)
            (l0 / "input").mkdir()
            for d in train_dirs:
                for p in Path(d).glob("*.png"):
                    os.link(p, l0 / "input" / p.name)
            print(f"[{time.monotonic() - t_start:6.1f}s] L0 targets written", flush=True)
        backend = None
        if any(n.startswith("spatial_rnn.") for n in names):  # build the native scan once, not in every run
            probe = "import json, restorekit.ops as o; print(json.dumps(o.backend_info()))"
            built = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
            backend = json.loads(built.stdout.strip().splitlines()[-1])
            print(f"[{time.monotonic() - t_start:6.1f}s] scan backend: {backend}", flush=True)
        train_budget = budget - (time.monotonic() - t_start) - reserve
        if train_budget < 10:
            raise SystemExit(f"the budget leaves {train_budget:.0f} s for training; give --budget more time")
        procs = {}
        for name in names:
            run_dir = work / "runs" / name
            run_dir.mkdir(parents=True)
            sources = [str(work / "l0data")] if name == "spatial_rnn.smooth_l0" else train_dirs
            cmd = _cmd("restorekit.train", "fit", "--preset", name, "--data", *sources, "--out", str(run_dir))
            cmd += [*JOBS[name], "--time-budget", f"{train_budget:.0f}s", "--steps", str(10**8), "--quiet"]
            cmd += ["--device", args.device, "--workers", str(args.workers), "--log-interval", "20"]
            cmd += _tiny_args(name) if args.tiny else []
            log = open(run_dir / "output.txt", "w")  # noqa: SIM115 (closed when its process ends)
            procs[name] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), log, run_dir)
        print(f"[{time.monotonic() - t_start:6.1f}s] training {len(procs)} models for {train_budget:.0f} s", flush=True)
        results: dict[str, dict] = {}
        for name, (proc, log, run_dir) in procs.items():
            code = proc.wait()
            log.close()
            logged = (
                [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
                if (run_dir / "log.jsonl").is_file()
                else []
            )
            steps = [r for r in logged if "loss" in r]
            exported = sorted((run_dir / "export").glob("*.safetensors"))
            results[name] = {
                "exit_code": code,
                "steps": steps[-1]["step"] if steps else 0,
                "patches_per_s": round(steps[-1]["patches_per_s"], 2) if steps else None,
                "final_loss": steps[-1]["loss"] if steps else None,
                "weights": exported[0].name if exported else None,
            }
            if exported:
                shutil.copy(exported[0], out / exported[0].name)
                results[name]["sha256"] = hashlib.sha256(exported[0].read_bytes()).hexdigest()
        print(f"[{time.monotonic() - t_start:6.1f}s] trained: {json.dumps(results)}", flush=True)
        _evaluate(results, out, work, data, args, env)
        wall = time.monotonic() - t_start
        summary = {
            "budget_s": budget,
            "train_budget_s": round(train_budget, 1),
            "wall_s": round(wall, 1),
            "device": args.device,
            "tiny": args.tiny,
            "scan_backend": backend,
            "models": results,
        }
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        (out / "report.md").write_text(_report(summary))
        with tarfile.open(out / "logs.tar.gz", "w:gz") as tar:
            for name, (_, _, run_dir) in procs.items():
                for f in ("config.json", "log.jsonl", "output.txt"):
                    if (run_dir / f).is_file():
                        tar.add(run_dir / f, arcname=f"{name}/{f}")
            for f in sorted(work.glob("eval_*.txt")):
                tar.add(f, arcname=f"eval/{f.name}")
        print(f"[{wall:6.1f}s] wrote {out}: {', '.join(sorted(p.name for p in out.iterdir()))}", flush=True)
        return 0 if all(r["exit_code"] == 0 and r["weights"] for r in results.values()) else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _evaluate(results: dict[str, dict], out: Path, work: Path, data: Path, args: argparse.Namespace, env: dict) -> None:
    """Measure the exported weights with the benchmark scripts, concurrently, and set each row's comparison."""
    jobs = []
    limit = ["--limit", str(args.limit)] if args.limit else []
    limit += [] if args.baselines else ["--no-baseline"]  # the inputs' figures are in the docs: time for the models
    rnn = [n.split(".")[1] for n in results if n.startswith("spatial_rnn.") and results[n]["weights"]]
    if rnn:
        weights_dir = work / "rnn_weights"
        weights_dir.mkdir()
        for tag in rnn:
            shutil.copy(out / results[f"spatial_rnn.{tag}"]["weights"], weights_dir)
        cmd = [sys.executable, str(BENCH / "eval_spatial_rnn.py"), "--weights-dir", str(weights_dir), "--only", *rnn]
        cmd += ["--data-root", str(data / "denoise"), "--device", args.device, "--json", str(work / "eval_rnn.json")]
        jobs.append(("rnn", cmd + limit))
    if results.get("dsrir.all_in_one", {}).get("weights"):
        cmd = [
            sys.executable,
            str(BENCH / "eval_dsrir.py"),
            "--weights",
            str(out / results["dsrir.all_in_one"]["weights"]),
        ]
        cmd += ["--data-root", str(data), "--device", args.device, "--json", str(work / "eval_dsrir.json")]
        cmd += ["--only", "noise", "haze", "rain"]
        jobs.append(("dsrir", cmd + limit))
    running = []
    for key, cmd in jobs:
        log = open(work / f"eval_{key}.txt", "w")  # noqa: SIM115 (closed when its process ends)
        running.append((key, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), log))
    for key, proc, log in running:
        code = proc.wait()
        log.close()
        path = work / f"eval_{key}.json"
        rows = json.loads(path.read_text()) if code == 0 and path.is_file() else []
        for row in rows:
            name = row["model"]
            label = row["label"]
            shipped = _shipped_figures(name)
            m = row["model_result"]
            row["shipped_psnr"] = shipped.get(f"{label} psnr")
            row["better_than_shipped"] = None if row["shipped_psnr"] is None else m["psnr"] > row["shipped_psnr"]
            results.setdefault(name, {}).setdefault("eval", []).append(row)
        if code != 0:
            for name in results:
                if (key == "dsrir") == name.startswith("dsrir"):
                    results[name]["eval_error"] = (work / f"eval_{key}.txt").read_text()[-2000:]


def _report(summary: dict) -> str:
    lines = [
        f"# Retraining on {summary['device']}: {summary['wall_s']} s of a {summary['budget_s']:.0f} s budget",
        "",
        "| model | steps | patches/s | benchmark | PSNR / SSIM | input or baseline | shipped | better |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in summary["models"].items():
        for row in r.get("eval", []) or [{}]:
            m, b = row.get("model_result", {}), row.get("baseline_result") or {}
            lines.append(
                f"| {name} | {r.get('steps')} | {r.get('patches_per_s')} | {row.get('label', '')} | "
                f"{m.get('psnr', float('nan')):.2f} / {m.get('ssim', float('nan')):.4f} | "
                f"{b.get('psnr', float('nan')):.2f} | {row.get('shipped_psnr')} | {row.get('better_than_shipped')} |"
            )
    return "\n".join(lines) + "\n"


def _seconds(text: str) -> float:
    from restorekit.train.config import parse_duration

    return parse_duration(text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="re-encode the training and test images losslessly into one folder")
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("-o", "--out", type=Path, default=ROOT / ".train_pack")
    p = sub.add_parser("run", help="train every model concurrently within a budget, export and evaluate")
    p.add_argument("--pack", type=Path, default=ROOT / ".train_pack")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--budget", default="8m", help="wall time for the whole command (default 8m)")
    p.add_argument("--eval-reserve", default="", help="of the budget, kept for evaluation (default 20 %%, >= 30 s)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--workers", type=int, default=3, help="data-loader workers per training process")
    p.add_argument("--models", nargs="+", choices=list(JOBS))
    p.add_argument("--tiny", action="store_true", help="tiny networks and patches (a CPU check of every part)")
    p.add_argument("--limit", type=int, default=0, help="evaluate on the first N images of each set")
    p.add_argument("--baselines", action="store_true", help="also measure the degraded inputs (twice the eval time)")
    args = ap.parse_args(argv)
    if args.command == "pack":
        return pack(args.data, args.out)
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
