"""Restore a large image in tiles on whatever device is there; memory stays bounded.

python examples/tiled_large_image.py big.png out.png --tile 512
"""

import argparse

from restorekit import Restorer

ap = argparse.ArgumentParser()
ap.add_argument("src")
ap.add_argument("dst")
ap.add_argument("--model", default="msrn.sr_x2")
ap.add_argument("--tile", default="auto", help="'auto', 0 for the whole image, or a size in pixels")
args = ap.parse_args()

tile = args.tile if args.tile == "auto" else int(args.tile) or None
restorer = Restorer(args.model, tile=tile, progress=True)
restorer.run(args.src, output=args.dst)
print(f"{args.dst}: tile {restorer.last_tile or 'whole image'} on {restorer.device}")
