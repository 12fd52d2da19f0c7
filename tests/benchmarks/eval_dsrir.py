"""Every figure recorded for the bundled DSRIR all-in-one weights, beside the degraded input.

Runs :func:`restorekit.evaluate.evaluate` (what ``restorekit eval`` runs; each row prints its command):

- CBSD68 (colour) with seeded Gaussian noise at sigma 15, 25, 50: full-image RGB PSNR/SSIM;
- CBSD68 with seeded synthetic haze (``restorekit.degrade.haze``, beta 0.6-1.8, airlight 0.7-1.0 per image);
- CBSD68 with seeded synthetic rain streaks (``restorekit.degrade.rain``, the training's kind): PSNR/SSIM on Y;
- the three Rain100L test pairs in ``derain/Rain100L_3``: PSNR/SSIM on Y (the paper's deraining convention);
- for reference, ``spatial_rnn.denoise`` on CBSD68 sigma 25.

The baseline of every row is the degraded input itself (``identity``). Seed 0 throughout. ``--weights`` measures
an exported file instead of the bundled one; ``--json`` writes every result; the last lines print the
``Metric`` tuples that restorekit/archs/dsrir.py records.

    python tests/benchmarks/eval_dsrir.py --json dsrir_eval.json          # add --limit N, --only noise
    python tests/benchmarks/eval_dsrir.py --only haze rain --limit 24     # haze and rain on 24 images
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import evalkit  # tests/benchmarks/evalkit.py, beside this script

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"

# (group, model, folder under the data root, degradation, convention, metric dataset label)
ROWS = [
    *(
        ("noise", "dsrir.all_in_one", "denoise/CBSD68", f"noise:{s}", "full_image", f"CBSD68 sigma {s}")
        for s in (15, 25, 50)
    ),
    ("haze", "dsrir.all_in_one", "denoise/CBSD68", "haze", "full_image", "CBSD68 synthetic haze"),
    ("rain", "dsrir.all_in_one", "denoise/CBSD68", "rain", "y_full", "CBSD68 synthetic rain"),
    ("rain", "dsrir.all_in_one", "derain/Rain100L_3", None, "y_full", "Rain100L (3 test pairs)"),
    ("reference", "spatial_rnn.denoise", "denoise/CBSD68", "noise:25", "full_image", "CBSD68 sigma 25"),
]


def command(model: str, folder: str, deg: str | None, conv: str, weights: Path | None) -> str:
    cmd = f"restorekit eval {model} --data ../shared/data/{folder}"
    cmd += f" --degrade {deg}" if deg else ""
    cmd += f" --convention {conv}"
    return cmd + (f" --weights {weights}" if weights else "")


def main() -> None:
    ap = evalkit.parser(
        __doc__.splitlines()[0],
        data_root=DATA,
        data_help="the folder holding denoise/ and derain/",
        only=[r[0] for r in ROWS],
        only_help="just these groups",
    )
    ap.add_argument("--weights", type=Path, help="an exported dsrir_all_in_one.safetensors (default: bundled)")
    args = evalkit.parse(ap)
    from restorekit.evaluate import evaluate

    if not (args.data_root / "denoise").is_dir():
        raise SystemExit(f"needs the benchmark images at {args.data_root}")
    tmp = Path(tempfile.mkdtemp())
    results, records = [], []
    try:
        for group, model, folder, deg, conv, label in ROWS:
            if args.only and group not in args.only:
                continue
            data = evalkit.subset(args.data_root, folder, args.limit, tmp) if args.limit else args.data_root / folder
            weights = args.weights if model.startswith("dsrir") else None
            row = {"group": group, "model": model, "label": label, "data": folder, "degradation": deg}
            row["convention"] = conv
            for who in (model, "identity")[: 1 if args.no_baseline else 2]:
                t0 = time.perf_counter()
                res = evaluate(
                    who,
                    data,
                    task="denoise" if who == "identity" else None,
                    degradation=deg,
                    convention=conv,
                    weights=weights if who == model else None,
                    device=args.device,
                    progress=False,
                )
                key = "model" if who == model else "baseline"
                row[key + "_result"] = {"psnr": res.psnr, "ssim": res.ssim, "images": len(res.images)}
                row[key + "_command"] = command(who, folder, deg, conv, weights if key == "model" else None)
                row[key + "_seconds"] = time.perf_counter() - t0
            m, b = row["model_result"], row.get("baseline_result")
            label = row["label"] = evalkit.label(label, args.limit, m["images"])  # a subset says so
            versus = f"input {b['psnr']:6.2f} / {b['ssim']:.4f}   ({m['psnr'] - b['psnr']:+.2f} dB, " if b else "("
            print(f"{model:<20} {label:<26} {m['psnr']:6.2f} dB / {m['ssim']:.4f}   {versus}{m['images']} images)")
            print(f"    {row['model_command']}" + (f"\n    {row['baseline_command']}" if b else ""), flush=True)
            results.append(row)
            if model.startswith("dsrir"):
                records += [(label, "psnr", round(m["psnr"], 2), conv), (label, "ssim", round(m["ssim"], 4), conv)]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.json}")
    print(f"all_in_one: {records!r}")


if __name__ == "__main__":
    main()
