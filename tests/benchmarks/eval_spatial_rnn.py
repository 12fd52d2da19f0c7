"""Every figure recorded for the bundled spatial-RNN weights, beside its trivial baseline.

Runs :func:`restorekit.evaluate.evaluate` (what ``restorekit eval`` runs; each row prints its command)
on ``../shared/data/denoise``:

- ``spatial_rnn.denoise``: CBSD68 (colour) and BSD68 (grey) at sigma 15, 25, 50, vs the noisy input;
- ``spatial_rnn.smooth_l0``: CBSD68 against the L0 solver's output (lambda 0.02), vs the input itself;
- ``spatial_rnn.inpaint``: CBSD68 with 50 % of the pixels missing, vs nearest-neighbour fill;
- ``spatial_rnn.colorize``: CBSD68 with the colour of 3 % of the pixels, vs the grey image with those hints.

All seeded (seed 0), full-image PSNR/SSIM (the denoising convention). ``--weights-dir`` measures exported
files (``spatial_rnn_<tag>.safetensors``) instead of the bundled ones; ``--json`` writes every result;
the last lines print the ``Metric`` tuples that restorekit/archs/spatial_rnn.py records.

    python tests/benchmarks/eval_spatial_rnn.py --json eval.json          # add --only denoise, --limit N
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import evalkit  # tests/benchmarks/evalkit.py, beside this script

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "denoise"

# (tag, dataset folder, degradation, target filter, baseline, metric dataset label)
ROWS = [
    *(("denoise", "CBSD68", f"noise:{s}", None, "identity", f"CBSD68 sigma {s}") for s in (15, 25, 50)),
    *(("denoise", "BSD68", f"noise:{s}", None, "identity", f"BSD68 sigma {s} (grey)") for s in (15, 25, 50)),
    ("smooth_l0", "CBSD68", None, "l0smooth:0.02", "identity", "CBSD68 vs L0 lambda 0.02"),
    ("inpaint", "CBSD68", "mask:0.5", None, "nearest", "CBSD68 50% missing"),
    ("colorize", "CBSD68", "hints:0.03", None, "identity", "CBSD68 3% colour hints"),
]


def command(model: str, folder: str, deg: str | None, target: str | None, weights: Path | None) -> str:
    cmd = f"restorekit eval {model} --data ../shared/data/denoise/{folder}"
    cmd += f" --degrade {deg}" if deg else ""
    cmd += f" --target {target}" if target else ""
    return cmd + (f" --weights {weights}" if weights else "")


def main() -> None:
    ap = evalkit.parser(
        __doc__.splitlines()[0],
        data_root=DATA,
        data_help="the folder holding CBSD68/ and BSD68/",
        only=[r[0] for r in ROWS],
        only_help="just these models",
    )
    ap.add_argument("--weights-dir", type=Path, help="exported spatial_rnn_<tag>.safetensors files (default: bundled)")
    args = evalkit.parse(ap)
    from restorekit.evaluate import evaluate

    root = args.data_root
    if not root.is_dir():
        raise SystemExit(f"needs the benchmark images at {root}")
    tmp = Path(tempfile.mkdtemp())
    results, records = [], {}
    try:
        for tag, folder, deg, target, baseline, label in ROWS:
            if args.only and tag not in args.only:
                continue
            data = root / folder
            if not data.is_dir():
                print(f"{label}: skipped, {data} is missing")
                continue
            if args.limit:
                data = evalkit.subset(root, folder, args.limit, tmp)
            weights = args.weights_dir / f"spatial_rnn_{tag}.safetensors" if args.weights_dir else None
            row = {"model": f"spatial_rnn.{tag}", "label": label, "data": folder, "degradation": deg, "target": target}
            for who in (f"spatial_rnn.{tag}", baseline)[: 1 if args.no_baseline else 2]:
                t0 = time.perf_counter()
                res = evaluate(
                    who,
                    data,
                    degradation=deg,
                    target=target,
                    weights=weights if who.startswith("spatial_rnn") else None,
                    device=args.device,
                    progress=False,
                )
                key = "model" if who.startswith("spatial_rnn") else "baseline"
                row[key + "_result"] = {"psnr": res.psnr, "ssim": res.ssim, "images": len(res.images)}
                row[key + "_command"] = command(who, folder, deg, target, weights if key == "model" else None)
                row[key + "_seconds"] = time.perf_counter() - t0
                conv = res.convention.name
            m, b = row["model_result"], row.get("baseline_result")
            label = row["label"] = evalkit.label(label, args.limit, m["images"])  # a subset says so
            versus = f"{baseline} {b['psnr']:6.2f} / {b['ssim']:.4f}   (+{m['psnr'] - b['psnr']:.2f} dB, " if b else "("
            print(
                f"{row['model']:<22} {label:<26} {m['psnr']:6.2f} dB / {m['ssim']:.4f}   {versus}{m['images']} images)"
            )
            print(f"    {row['model_command']}" + (f"\n    {row['baseline_command']}" if b else ""))
            results.append(row)
            records.setdefault(tag, []).extend(
                [(label, "psnr", round(m["psnr"], 2), conv), (label, "ssim", round(m["ssim"], 4), conv)]
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.json}")
    for tag, metrics in records.items():
        print(f"{tag}: {metrics!r}")


if __name__ == "__main__":
    main()
