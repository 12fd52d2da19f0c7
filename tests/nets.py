"""Small test-only architectures that exercise the Restorer's contract paths."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from restorekit import registry
from restorekit.registry import ArchSpec, WeightRecord


class GreyNet(nn.Module):
    """1-channel model with a receptive field of 2 px; optional subpixel upscaling."""

    def __init__(self, *, scale: int = 1, channels: int = 4) -> None:
        super().__init__()
        self.scale = scale
        self.body = nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels, scale * scale, 3, padding=1),
            nn.PixelShuffle(scale),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up = nn.functional.interpolate(x, scale_factor=self.scale, mode="nearest") if self.scale > 1 else x
        return up + 0.1 * self.body(x)


class Multiple8Net(nn.Module):
    """Needs H and W divisible by 8 (two stride-2 stages down, two up); returns [final, aux]."""

    def __init__(self, *, channels: int = 4) -> None:
        super().__init__()
        self.down = nn.Sequential(
            nn.Conv2d(3, channels, 3, stride=2, padding=1), nn.Conv2d(channels, channels, 3, stride=2, padding=1)
        )
        self.up = nn.Sequential(
            nn.ConvTranspose2d(channels, channels, 2, stride=2), nn.ConvTranspose2d(channels, 3, 2, stride=2)
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.shape[-1] % 8 or x.shape[-2] % 8:
            raise AssertionError(f"input {tuple(x.shape)} not padded to a multiple of 8")
        return [x + 0.05 * self.up(self.down(x)), torch.zeros_like(x)]


class HotNet(nn.Module):
    """Overflows in float16 (values beyond 65504 before being scaled back): tests the fp32 fallback."""

    def __init__(self) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.tensor(1e5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.gain) / self.gain


SPECS = [
    ArchSpec(
        name="greynet",
        build=lambda **c: GreyNet(**c),
        default_config={"scale": 1, "channels": 4},
        tiny_config={},
        paper="test",
        receptive_field=2,
        footprint=200.0,
    ),
    ArchSpec(
        name="m8net",
        build=lambda **c: Multiple8Net(**c),
        default_config={"channels": 4},
        tiny_config={},
        paper="test",
        receptive_field=None,
        footprint=200.0,
        select_output=lambda out: out[0],
        size_multiple=8,
    ),
    ArchSpec(
        name="hotnet",
        build=lambda **c: HotNet(),
        default_config={},
        tiny_config={},
        paper="test",
        receptive_field=0,
        footprint=16.0,
    ),
]
RECORDS = [
    WeightRecord(
        arch="greynet", tag="denoise", task="denoise", description="grey", in_channels=1, out_channels=1, default=True
    ),
    WeightRecord(
        arch="greynet",
        tag="sr_x2",
        task="sr",
        description="grey sr",
        in_channels=1,
        out_channels=1,
        scale=2,
        config={"scale": 2, "channels": 4},
    ),
    WeightRecord(
        arch="greynet",
        tag="sr_x3_pre",
        task="sr",
        description="grey sr on a pre-upsampled input (MemNet-style)",
        in_channels=1,
        out_channels=1,
        scale=3,
        pre_upsample=True,
    ),
    WeightRecord(arch="m8net", tag="deblur", task="deblur", description="multiple of 8", size_multiple=8, default=True),
    WeightRecord(
        arch="hotnet",
        tag="denoise",
        task="denoise",
        description="fp16 overflow",
        default=True,
        dtypes=("float32", "float16"),
    ),
]


@contextlib.contextmanager
def registered():
    with contextlib.ExitStack() as stack:
        for spec in SPECS:
            stack.enter_context(registry.temporary(spec, *[r for r in RECORDS if r.arch == spec.name]))
        yield
