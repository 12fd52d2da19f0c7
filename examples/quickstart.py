"""The main job: restore one image with a pretrained model.

    python examples/quickstart.py                      # spatial_rnn.denoise on examples/noisy_sample.png
    python examples/quickstart.py msrn.sr_x2 photo.jpg out.png

The default model's weights are bundled in the package, so this works offline on a fresh install.
Other models fetch their weights once, verify their digest and cache them as safetensors; later runs
work offline.
"""

import sys
from pathlib import Path

from restorekit import Restorer

here = Path(__file__).parent
model = sys.argv[1] if len(sys.argv) > 1 else "spatial_rnn.denoise"
src = Path(sys.argv[2]) if len(sys.argv) > 2 else here / "noisy_sample.png"
dst = Path(sys.argv[3]) if len(sys.argv) > 3 else Path(f"{src.stem}_{model.replace('.', '_')}.png")

restorer = Restorer(model, progress=True)
print(restorer)
written = restorer.run(src, output=dst)
print(f"wrote {written}")
