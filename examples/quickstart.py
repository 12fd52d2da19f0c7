"""The main job: restore one image with a pretrained model.

    python examples/quickstart.py                      # msrn.sr_x4 on examples/sample.png
    python examples/quickstart.py msrn.sr_x2 photo.jpg out.png

The first run fetches the model's weights once, verifies their digest and caches them as
safetensors; later runs work offline.
"""

import sys
from pathlib import Path

from restorekit import Restorer

here = Path(__file__).parent
model = sys.argv[1] if len(sys.argv) > 1 else "msrn.sr_x4"
src = Path(sys.argv[2]) if len(sys.argv) > 2 else here / "sample.png"
dst = Path(sys.argv[3]) if len(sys.argv) > 3 else Path(f"{src.stem}_{model.replace('.', '_')}.png")

restorer = Restorer(model, progress=True)
print(restorer)
written = restorer.run(src, output=dst)
print(f"wrote {written}")
