"""Restorer("auto") against the oracle choice on CBSD68 with seeded noise, JPEG, and both.

For each degradation and each image: the PSNR of the degraded input, of every candidate (the bundled denoisers
``spatial_rnn.denoise`` and ``dsrir.denoise``; for the rows with JPEG also "no model", the input itself), and of
what ``Restorer("auto")`` chose from its own measurements. The oracle is the one candidate with the best mean PSNR
over the row, chosen knowing the true degradation; "kept" is the fraction of the oracle's gain over the input that
auto keeps, ``(auto - input) / (oracle - input)``.

The degradations are those of ``restorekit eval`` (:mod:`restorekit.degrade`, seed 0, the per-image seed of
:mod:`restorekit.evaluate`): ``noise:S`` is unclipped Gaussian noise, fed to every model clamped to [0, 1] (as
evaluation feeds it); ``jpeg:Q`` is Pillow's libjpeg at quality Q with 4:2:0 chroma, written as a real ``.jpg``
file, so that auto reads it as a user's file (its quantisation tables); ``noise:S+jpeg:Q`` compresses the noisy
image. PSNR: full-image RGB (the denoising convention). Each model runs once per image: where auto chose one of
the candidates, its PSNR is that candidate's; only a chain (e.g. deblock then denoise) is run again.

    python tests/benchmarks/eval_auto.py                                   # every row, all 68 images
    python tests/benchmarks/eval_auto.py --limit 12 --only noise           # the first 12 images
    python tests/benchmarks/eval_auto.py --only noise --sigmas 35 40 45 --no-auto --limit 8   # the crossover

``--cache FILE`` keeps every candidate's per-image PSNR (keyed by degradation, seed, image and model) in a JSON
file and reuses it on the next run, so auto's column can be re-measured after a change to the choice without
running DSRIR again (about 20-30 s per image on a CPU). ``--no-auto`` measures the candidates only.
"""

from __future__ import annotations

import io
import json
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

import evalkit  # tests/benchmarks/evalkit.py, beside this script
import numpy as np
import torch
from PIL import Image

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "denoise"
DENOISERS = ("spatial_rnn.denoise", "dsrir.denoise")
IDENTITY = "identity"


def rows(sigmas: list[int], qualities: list[int], both: list[str]) -> list[tuple[str, str, tuple[str, ...]]]:
    """(group, label, candidates) for each degradation spec."""
    out = [("noise", f"noise:{s}", DENOISERS) for s in sigmas]
    out += [("jpeg", f"jpeg:{q}", (IDENTITY, *DENOISERS)) for q in qualities]
    out += [("both", spec, (IDENTITY, *DENOISERS)) for spec in both]
    return out


def degrade(spec: str, truth: torch.Tensor, seed: int, folder: Path, name: str) -> tuple[torch.Tensor, Path | None]:
    """The degraded image (1, C, H, W) in [0, 1] and, for JPEG, the .jpg file that holds it."""
    from restorekit.degrade import jpeg, parse

    x, path = truth, None
    for part in spec.split("+"):
        deg = parse(part)
        if deg.name != "jpeg":
            x = deg(x, seed=seed)
            continue
        quality = int(deg.params["quality"])
        pixels = (x[0].clamp(0, 1) * 255 + 0.5).floor().to(torch.uint8).permute(1, 2, 0).numpy()
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="JPEG", quality=quality, subsampling="4:2:0")
        path = folder / f"{Path(name).stem}_{spec.replace(':', '').replace('+', '_')}.jpg"
        path.write_bytes(buf.getvalue())
        decoded = torch.from_numpy(np.asarray(Image.open(path).convert("RGB")).copy()).permute(2, 0, 1)[None] / 255
        # The file holds exactly what restorekit.degrade.jpeg makes (the evaluation's JPEG rows).
        assert torch.equal(decoded, jpeg(x, quality)), f"{path}: differs from restorekit.degrade.jpeg"
        x = decoded
    return x.clamp(0, 1).float(), path


def main() -> None:
    ap = evalkit.parser(
        __doc__.splitlines()[0],
        data_root=DATA,
        data_help="the folder holding CBSD68/",
        only=["noise", "jpeg", "both"],
        only_help="just these groups of rows",
    )
    ap.add_argument("--sigmas", type=int, nargs="+", default=[15, 25, 50], help="noise rows (default 15 25 50)")
    ap.add_argument("--qualities", type=int, nargs="+", default=[10, 20, 30, 40], help="JPEG rows (10 20 30 40)")
    ap.add_argument("--both", nargs="+", default=["noise:15+jpeg:40", "noise:25+jpeg:30"], help="noise then JPEG")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", type=Path, help="JSON file of the candidates' per-image PSNR, read and updated")
    ap.add_argument("--no-auto", action="store_true", help="measure the candidates only")
    args = evalkit.parse(ap)
    from restorekit.evaluate import _image_seed
    from restorekit.image import Planar, read_image
    from restorekit.metrics import DENOISE, psnr
    from restorekit.restorer import Restorer

    folder = args.data_root / "CBSD68"
    if not folder.is_dir():
        raise SystemExit(f"needs the CBSD68 images at {folder}")
    images = sorted(folder.glob("*.png"))[: args.limit or None]
    cache: dict[str, float] = json.loads(args.cache.read_text()) if args.cache and args.cache.is_file() else {}
    models: dict[str, Restorer] = {}
    auto = None if args.no_auto else Restorer("auto", device=args.device, progress=False)

    def restore(name: str, x: torch.Tensor) -> torch.Tensor:
        if name == IDENTITY:
            return x
        if name not in models:
            models[name] = Restorer(name, device=args.device, progress=False)
        return models[name].restore_planar(Planar(color=x[0], alpha=None, bit_depth=32)).color[None]

    results = []
    tmp = Path(tempfile.mkdtemp(prefix="eval_auto_"))
    print(f"{'degradation':<18} {'n':>3} {'input':>7} " + " ".join(f"{m:>20}" for m in (IDENTITY, *DENOISERS)))
    for group, spec, candidates in rows(args.sigmas, args.qualities, args.both):
        if args.only and group not in args.only:
            continue
        t0 = time.perf_counter()
        per: dict[str, list[float]] = {m: [] for m in candidates}
        inputs, autos, choices = [], [], Counter()
        exact = 0
        for path in images:
            truth = read_image(path).color[None]
            x, jpg = degrade(spec, truth, _image_seed(args.seed, path.name), tmp, path.name)
            score = {IDENTITY: float(psnr(x, truth, DENOISE)[0])}
            inputs.append(score[IDENTITY])
            for name in candidates:
                key = f"{spec}|{args.seed}|{path.name}|{name}"
                if name not in score:
                    if key not in cache:
                        cache[key] = float(psnr(restore(name, x), truth, DENOISE)[0])
                    score[name] = cache[key]
                per[name].append(score[name])
            if auto is not None:
                source = jpg if jpg is not None else x[0].permute(1, 2, 0).numpy()
                plan = auto.plan_for(source)
                if "jpeg:" in spec:
                    true_q = int(spec.split("jpeg:")[1])
                    exact += plan.analysis.jpeg_quality == true_q
                chain = [step.model for step in plan.steps]
                choices[" then ".join(chain) or "unchanged"] += 1
                if not chain:
                    autos.append(score[IDENTITY])
                elif len(chain) == 1 and chain[0] in score:
                    autos.append(score[chain[0]])  # that model's output on this image, measured above
                else:
                    y = auto.run(jpg) if jpg is not None else auto.run(x)
                    y = torch.from_numpy(np.asarray(y, np.float32) / 255).permute(2, 0, 1)[None] if jpg else y
                    autos.append(float(psnr(y.float(), truth, DENOISE)[0]))
            if args.cache:
                args.cache.write_text(json.dumps(cache, indent=1, sort_keys=True) + "\n")
        means = {m: statistics.fmean(v) for m, v in per.items()}
        mean_in = statistics.fmean(inputs)
        oracle = max(means, key=means.__getitem__)
        row = {
            "degradation": spec,
            "label": evalkit.label(f"CBSD68 {spec}", args.limit, len(images)),
            "images": len(images),
            "input": mean_in,
            "candidates": means,
            "oracle": oracle,
            "oracle_psnr": means[oracle],
            "seconds": time.perf_counter() - t0,
        }
        cells = " ".join(f"{means[m]:20.2f}" if m in means else f"{'':>20}" for m in (IDENTITY, *DENOISERS))
        print(f"{spec:<18} {len(images):>3} {mean_in:7.2f} {cells}")
        line = f"    oracle {oracle} {means[oracle]:.2f}"
        if autos:
            mean_auto = statistics.fmean(autos)
            gain = means[oracle] - mean_in
            kept = (mean_auto - mean_in) / gain if gain > 1e-9 else None
            row.update(auto=mean_auto, kept=kept, choices=dict(choices))
            if "jpeg:" in spec:
                row["quality_exact"] = exact
                line += f"; quality read exactly on {exact}/{len(images)}"
            line += f"; auto {mean_auto:.2f} ({mean_auto - means[oracle]:+.2f} dB vs the oracle"
            line += f", keeps {100 * kept:.1f} % of its gain)" if kept is not None else ")"
            line += "; auto chose " + ", ".join(f"{k} x{v}" for k, v in choices.most_common())
        print(line, flush=True)
        results.append(row)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
