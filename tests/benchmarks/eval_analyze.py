"""How well ``restorekit.analyze`` measures: σ error by σ, JPEG quality accuracy, clean false positives.

Seeded degradations of the benchmark sets in ../shared/data (CBSD68 colour, Classic5 grey):

- noise: ``degrade.gaussian_noise(quantize=True)`` (as a saved 8-bit file holds it) at each σ, seed = image index;
  the error of the estimated σ (mean of the channels), mean and worst by σ, and how often σ 0 measures clean;
- JPEG files: each image written by Pillow at each quality and read back by ``analyze(path)``: exact-match rate;
- JPEG pixels: the same images decoded (an array that was once a JPEG): the blocking estimate's mean and worst error.

    python tests/benchmarks/eval_analyze.py                 # all images (about 10 min on 2 loaded cores)
    python tests/benchmarks/eval_analyze.py --limit 12
    python tests/benchmarks/eval_analyze.py --compare-mad --limit 20   # σ only: analyze's patch PCA vs MAD of HH

``--under-jpeg`` measures only the noise read from a JPEG file's coefficients (``analyze`` on noisy images saved
by Pillow at quality 10-90): for each quality, the 95th percentile of what the clean images read (the floor
``analyze`` uses, ``restorekit.analysis._UNDER_FLOOR``), and for each σ how often the noise is found and how far
off the σ found is.

    python tests/benchmarks/eval_analyze.py --under-jpeg --limit 68      # CBSD68 and Classic5, about 15 min

``--rain`` measures the rain detector that was tried and not shipped (``analyze`` reports rain as unknown): the
orientation coherence of the high-pass luma's structure tensor over the whole image (parallel streaks give one
dominant direction), on clean CBSD68, CBSD68 with ``degrade.rain`` (seeded) and the Rain100L pairs.

    python tests/benchmarks/eval_analyze.py --rain

``--compare-mad`` measures, on the same seeded noisy images, the estimator ``analyze`` uses (weak-texture patch
PCA with the clipping correction) beside Donoho's median absolute deviation of the finest Haar HH band, each
averaged over the channels, and skips the JPEG rows.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from restorekit import analyze, degrade
from restorekit.folders import image_files

ROOT = Path(__file__).resolve().parents[2].parent / "shared" / "data"
SIGMAS = (0, 5, 10, 15, 25, 35, 50, 70)
QUALITIES = (5, 10, 20, 30, 40, 50, 75, 95)


def _load(path: Path) -> np.ndarray:
    img = Image.open(path)
    return np.asarray(img.convert("RGB" if img.mode not in ("L", "I;16") else "L"))


def _tensor(a: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(a).float() / 255
    return (t[None] if t.ndim == 2 else t.permute(2, 0, 1))[None]


def _array(t: torch.Tensor) -> np.ndarray:
    a = (t[0].clamp(0, 1) * 255).round().to(torch.uint8)
    return a[0].numpy() if a.shape[0] == 1 else a.permute(1, 2, 0).numpy()


def noise_rows(name: str, images: list[np.ndarray]) -> list[str]:
    rows = []
    for sigma in SIGMAS:
        errors, clean = [], 0
        for i, a in enumerate(images):
            noisy = _array(degrade.gaussian_noise(_tensor(a), sigma, seed=i, quantize=True))
            report = analyze(noisy)
            found = report.get("noise")
            estimate = found.value if found.value is not None else 0.0
            errors.append(estimate - sigma)
            clean += not found.present
        abs_err = [abs(e) for e in errors]
        rows.append(
            f"| {name} | σ {sigma} | {statistics.mean(errors):+.2f} | {statistics.mean(abs_err):.2f} | "
            f"{max(abs_err):.2f} | {clean}/{len(images)} |"
        )
    return rows


def mad_rows(name: str, images: list[np.ndarray]) -> list[str]:
    from restorekit.analysis import _sigma_mad

    rows = []
    for sigma in SIGMAS:
        pca, mad = [], []
        for i, a in enumerate(images):
            noisy = _array(degrade.gaussian_noise(_tensor(a), sigma, seed=i, quantize=True))
            found = analyze(noisy).get("noise")
            pca.append(abs((found.value if found.value is not None else 0.0) - sigma))
            chans = noisy[..., None] if noisy.ndim == 2 else noisy
            mad.append(
                abs(
                    statistics.mean(_sigma_mad(chans[..., c].astype(np.float64)) for c in range(chans.shape[-1]))
                    - sigma
                )
            )
        rows.append(
            f"| {name} | σ {sigma} | {statistics.mean(pca):.2f} | {max(pca):.2f} | {statistics.mean(mad):.2f} | "
            f"{max(mad):.2f} |"
        )
    return rows


def jpeg_rows(name: str, images: list[np.ndarray], tmp: Path) -> list[str]:
    rows = []
    for q in QUALITIES:
        exact, errors = 0, []
        for i, a in enumerate(images):
            path = tmp / f"{name}_{i}_{q}.jpg"
            Image.fromarray(a).save(path, quality=q)
            exact += analyze(path).jpeg_quality == q
            est = analyze(np.asarray(Image.open(path))).get("jpeg")
            errors.append(abs(est.value - q) if est.present and est.value is not None else float("nan"))
        known = [e for e in errors if e == e]
        err = f"{statistics.mean(known):.1f} | {max(known):.1f}" if known else "- | -"
        rows.append(f"| {name} | q {q} | {exact}/{len(images)} | {len(known)}/{len(images)} | {err} |")
    return rows


UNDER_SIGMAS = (0, 10, 15, 25, 50)
UNDER_QUALITIES = (10, 20, 30, 40, 50, 60, 75, 90)


def under_rows(name: str, images: list[np.ndarray], tmp: Path) -> list[str]:
    rows = []
    for q in UNDER_QUALITIES:
        clean_reads, cells = [], []
        for sigma in UNDER_SIGMAS:
            found, errors = 0, []
            for i, a in enumerate(images):
                noisy = _array(degrade.gaussian_noise(_tensor(a), sigma, seed=i, quantize=True)) if sigma else a
                path = tmp / f"{name}_{i}_{sigma}_{q}.jpg"
                Image.fromarray(noisy).save(path, quality=q, subsampling="4:2:0")
                f = analyze(path).get("noise")
                if sigma == 0:
                    clean_reads.append(f.detail.get("under_jpeg", {}).get("sigma", float("nan")))
                found += bool(f.present)
                if f.present and sigma:
                    errors.append(abs(f.value - sigma))
            err = f"{statistics.mean(errors):.1f}" if errors else "-"
            cells.append(f"{found}/{len(images)}" + ("" if sigma == 0 else f" ({err})"))
        reads = np.array([r for r in clean_reads if r == r])
        p95 = f"{np.quantile(reads, 0.95):.1f}" if len(reads) else "-"
        rows.append(f"| {name} | q {q} | {p95} | " + " | ".join(cells) + " |")
    return rows


def _box(a: np.ndarray, r: int) -> np.ndarray:
    k = 2 * r + 1
    c = np.pad(np.pad(a, r, mode="reflect").cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    return (c[k:, k:] - c[:-k, k:] - c[k:, :-k] + c[:-k, :-k]) / (k * k)


def rain_coherence(rgb: np.ndarray) -> float:
    """Orientation coherence (0: no direction, 1: one) of the luma minus its 7x7 mean."""
    y = rgb @ np.array([0.299, 0.587, 0.114]) if rgb.ndim == 3 else rgb.astype(np.float64)
    gy, gx = np.gradient(y - _box(y, 3))
    jxx, jyy, jxy = (gx * gx).mean(), (gy * gy).mean(), (gx * gy).mean()
    return float(np.sqrt((jxx - jyy) ** 2 + 4 * jxy**2) / (jxx + jyy))


def rain_rows(root: Path, limit: int) -> list[str]:
    files = image_files(root / "denoise" / "CBSD68")
    files = files[:limit] if limit else files
    clean, rainy = [], []
    for i, p in enumerate(files):
        a = np.asarray(Image.open(p).convert("RGB"), np.float64)
        clean.append(rain_coherence(a))
        r = degrade.rain(torch.from_numpy(a / 255).permute(2, 0, 1)[None], seed=i)
        rainy.append(rain_coherence(np.round(r[0].permute(1, 2, 0).numpy() * 255)))
    pairs = root / "derain" / "Rain100L_3"
    real = []
    for p in image_files(pairs / "input") if pairs.is_dir() else []:
        a, b = (
            np.asarray(Image.open(d / p.name).convert("RGB"), np.float64) for d in (pairs / "input", pairs / "target")
        )
        real.append((p.name, rain_coherence(a), rain_coherence(b)))
    pct = lambda v: " / ".join(f"{np.percentile(v, q):.3f}" for q in (5, 50, 95, 100))  # noqa: E731
    rows = [
        f"| CBSD68 clean ({len(clean)}) | {pct(clean)} |",
        f"| CBSD68 + degrade.rain ({len(rainy)}) | {pct(rainy)} |",
    ]
    top = max(clean)
    rows.append(f"| rainy above the clean maximum {top:.3f} | {sum(r > top for r in rainy)}/{len(rainy)} |")
    rows += [f"| Rain100L {name}: input / target | {a:.3f} / {b:.3f} |" for name, a, b in real]
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", type=Path, default=ROOT)
    ap.add_argument("--limit", type=int, default=0, help="first N images of each set (0: all)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--compare-mad", action="store_true", help="σ only: patch PCA beside MAD of HH")
    ap.add_argument("--under-jpeg", action="store_true", help="only the noise read from JPEG files' coefficients")
    ap.add_argument("--rain", action="store_true", help="only the rain detector that was tried (not shipped)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    sets = {"CBSD68": args.data_root / "denoise" / "CBSD68", "Classic5": args.data_root / "jpeg" / "Classic5"}
    t0 = time.perf_counter()
    if args.rain:
        print("| images | orientation coherence: 5th / 50th / 95th percentile / max |\n|---|---|")
        print("\n".join(rain_rows(args.data_root, args.limit)))
        print(f"\ntotal {time.perf_counter() - t0:.0f} s")
        return
    noise, jpeg = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name, folder in sets.items():
            files = image_files(folder)
            files = files[: args.limit] if args.limit else files
            images = [_load(p) for p in files]
            label = name if not args.limit else f"{name}, first {len(images)} images"
            if args.compare_mad:
                noise += mad_rows(label, images)
                continue
            if args.under_jpeg:
                noise += under_rows(label, images, Path(tmp))
                print(f"{label}: done at {time.perf_counter() - t0:.0f} s", flush=True)
                continue
            noise += noise_rows(label, images)
            jpeg += jpeg_rows(label, images, Path(tmp))
            print(f"{label}: done at {time.perf_counter() - t0:.0f} s", flush=True)
    if args.compare_mad:
        print("\n| set | noise | patch PCA (analyze): mean abs error | worst | MAD of HH: mean abs error | worst |")
        print("|---|---|---|---|---|---|")
        print("\n".join(noise))
        print(f"\ntotal {time.perf_counter() - t0:.0f} s")
        return
    if args.under_jpeg:
        head = " | ".join(f"σ {s}: found" + ("" if s == 0 else " (mean abs error)") for s in UNDER_SIGMAS)
        print(f"\n| set | quality | clean: 95th percentile of σ̂ | {head} |")
        print("|---|---|---|" + "---|" * len(UNDER_SIGMAS))
        print("\n".join(noise))
        print(f"\ntotal {time.perf_counter() - t0:.0f} s")
        return
    print("\n| set | noise | mean error (σ̂ − σ) | mean abs error | worst abs error | measured not noisy |")
    print("|---|---|---|---|---|---|")
    print("\n".join(noise))
    print("\n| set | quality | file: exact | pixels: estimated | pixels: mean abs error | pixels: worst |")
    print("|---|---|---|---|---|---|")
    print("\n".join(jpeg))
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
