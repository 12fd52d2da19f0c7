"""Fine-tune a restorekit model on your own photos, then restore with the result.

    python examples/finetune.py my_photos/                     # spatial_rnn.denoise, 500 steps
    python examples/finetune.py my_photos/ msrn.sr_x4 2000     # another model, more steps
    python examples/finetune.py my_photos/ spatial_rnn.denoise 500 mine.safetensors  # start from a file

The folder holds clean images; the model's preset degrades them on the fly (noise, bicubic
downscaling, JPEG ... as its paper did), crops random patches, and trains with the paper's loss.
Stop it with Ctrl-C at any time: the checkpoint is saved and the same command resumes.
``restorekit-train fit --preset NAME --data DIR`` does the same from the shell.
"""

import sys
from pathlib import Path

from restorekit.train import TrainConfig, fit

folder = sys.argv[1] if len(sys.argv) > 1 else "my_photos"
model = sys.argv[2] if len(sys.argv) > 2 else "spatial_rnn.denoise"
steps = int(sys.argv[3]) if len(sys.argv) > 3 else 500
out = Path("runs") / f"finetune_{model.replace('.', '_')}"

cfg = TrainConfig.from_preset(
    model,
    data=[folder],
    out=str(out),
    steps=steps,
    # The paper recipes train from scratch for 20k-1M steps; for a short fine-tune a constant Adam step
    # adapts faster. init_weights="pretrained" starts from the model's published weights (or give a file).
    init_weights="pretrained" if len(sys.argv) <= 4 else sys.argv[4],
    optimizer="adam",
    lr=1e-4,
    schedule="constant",
    warmup_steps=0,
    batch_size=8,
    checkpoint_interval=100,
    ema_decay=0.999,
)
summary = fit(cfg)
print(f"trained {summary['step']} steps; checkpoints in {out / 'checkpoints'}")

# Restore with the fine-tuned (EMA) weights: write them as a restorekit safetensors file.
import torch  # noqa: E402

from restorekit import Restorer  # noqa: E402
from restorekit.weights import save_weights  # noqa: E402

ckpt = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
weights = out / "finetuned.safetensors"
save_weights(weights, ckpt["ema"] or ckpt["model"], arch=ckpt["arch"], config=ckpt["config"], name=ckpt["model_name"])
restorer = Restorer(ckpt["model_name"], weights=weights)
print(f"{restorer}\nrestore an image with: Restorer({ckpt['model_name']!r}, weights={str(weights)!r}).run(...)")
