"""MSRN: multi-scale residual network for single-image super-resolution.

Li, Fang, Mei, Zhang, "Multi-scale Residual Network for Image Super-Resolution", ECCV 2018.
Faithful to the authors' PyTorch model (MIVRC/MSRN-PyTorch, ``MSRN/Train/model/msrn.py``): the
module names below are theirs, so the official ``MSRN_x{2,3,4,8}.pt`` state dicts load as they
are. The network works in the 0..255 range (``rgb_range`` 255) and subtracts/adds the DIV2K mean
with two frozen 1x1 convolutions; the Restorer scales [0, 1] images by ``value_range`` for it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..policy import ArchPolicy, InferencePolicy
from ..registry import ArchSpec, UrlSource, WeightRecord, psnr_ssim, register_arch, register_weights

DIV2K_MEAN = (0.4488, 0.4371, 0.4040)


class MeanShift(nn.Conv2d):
    """Adds ``sign * rgb_range * mean`` per channel as a frozen 1x1 convolution (keeps the authors' keys)."""

    def __init__(self, rgb_range: float, mean: tuple[float, ...] = DIV2K_MEAN, sign: int = -1) -> None:
        n = len(mean)
        super().__init__(n, n, kernel_size=1)
        with torch.no_grad():
            self.weight.copy_(torch.eye(n).view(n, n, 1, 1))
            self.bias.copy_(sign * rgb_range * torch.tensor(mean))
        self.requires_grad_(False)


class MSRB(nn.Module):
    """Multi-scale residual block: parallel 3x3 and 5x5 paths, crossed once, fused by a 1x1 conv."""

    def __init__(self, n_feats: int = 64) -> None:
        super().__init__()
        self.conv_3_1 = nn.Conv2d(n_feats, n_feats, 3, padding=1)
        self.conv_5_1 = nn.Conv2d(n_feats, n_feats, 5, padding=2)
        self.conv_3_2 = nn.Conv2d(2 * n_feats, 2 * n_feats, 3, padding=1)
        self.conv_5_2 = nn.Conv2d(2 * n_feats, 2 * n_feats, 5, padding=2)
        self.confusion = nn.Conv2d(4 * n_feats, n_feats, 1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p1 = torch.cat([self.relu(self.conv_3_1(x)), self.relu(self.conv_5_1(x))], 1)
        p2 = torch.cat([self.relu(self.conv_3_2(p1)), self.relu(self.conv_5_2(p1))], 1)
        return self.confusion(p2) + x


def _upsampler(scale: int, n_feats: int) -> nn.Sequential:
    """Sub-pixel upsampler: 3x3 conv to r^2 * C channels + PixelShuffle(r), r = 2 repeated or 3."""
    layers: list[nn.Module] = []
    if scale & (scale - 1) == 0:  # power of two
        for _ in range(int(math.log2(scale))):
            layers += [nn.Conv2d(n_feats, 4 * n_feats, 3, padding=1), nn.PixelShuffle(2)]
    elif scale == 3:
        layers += [nn.Conv2d(n_feats, 9 * n_feats, 3, padding=1), nn.PixelShuffle(3)]
    else:
        raise ValueError(f"MSRN supports scale 2, 3, 4 or 8, not {scale}")
    return nn.Sequential(*layers)


class MSRN(nn.Module):
    """MSRN; input and output are RGB in 0..``rgb_range``; output is ``scale`` times larger.

    >>> MSRN(scale=2, n_feats=8, n_blocks=2)(torch.rand(1, 3, 8, 8) * 255).shape
    torch.Size([1, 3, 16, 16])
    """

    def __init__(
        self, *, scale: int = 4, n_feats: int = 64, n_blocks: int = 8, n_colors: int = 3, rgb_range: float = 255.0
    ) -> None:
        super().__init__()
        self.scale, self.n_feats, self.n_blocks, self.n_colors, self.rgb_range = (
            scale,
            n_feats,
            n_blocks,
            n_colors,
            rgb_range,
        )
        self.sub_mean = MeanShift(rgb_range, sign=-1)
        self.add_mean = MeanShift(rgb_range, sign=1)
        self.head = nn.Sequential(nn.Conv2d(n_colors, n_feats, 3, padding=1))
        self.body = nn.ModuleList(MSRB(n_feats) for _ in range(n_blocks))
        # The authors concatenate the block outputs with the head's output LAST.
        self.tail = nn.Sequential(
            nn.Conv2d(n_feats * (n_blocks + 1), n_feats, 1),
            nn.Conv2d(n_feats, n_feats, 3, padding=1),
            _upsampler(scale, n_feats),
            nn.Conv2d(n_feats, n_colors, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.sub_mean(x))
        feats = []
        h = x
        for block in self.body:
            h = block(h)
            feats.append(h)
        feats.append(x)
        return self.add_mean(self.tail(torch.cat(feats, 1)))


def _build(**config: Any) -> MSRN:
    return MSRN(**config)


def _filter_checkpoint(state_dict: dict[str, torch.Tensor], config: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The official files already use our key names; super-image's ``bam`` attention keys have no place here."""
    extra = [k for k in state_dict if ".attention." in k]
    if extra:
        from ..errors import ConversionError

        raise ConversionError(
            f"this checkpoint has attention keys ({extra[0]}, ...): it is super-image's MSRN-BAM variant, "
            "which restorekit does not implement; use a plain MSRN checkpoint"
        )
    return dict(state_dict)


# Peak activation bytes per LR pixel, fp32, full size (tests/benchmarks/footprint.py, 256x256, CPU).
_FOOTPRINT = {2: 8_950, 3: 11_800, 4: 16_450, 8: 43_200}

# Receptive-field radius in LR pixels: head 1 + 8 blocks x (2 + 2) + tail.1 1 + upsampler conv 1
# + final conv (1 HR px, < 1 LR px, rounds to 1) = 36.
SPEC = register_arch(
    ArchSpec(
        name="msrn",
        # channels_last on the CPU: 0.88 at 128 px, 0.82 at 256 px of contiguous time, same results
        # (python tests/benchmarks/bench_policy.py --size 256 --repeats 4 --no-compile; docs/performance.md).
        policy=ArchPolicy(cpu=InferencePolicy(memory_format="channels_last")),
        build=_build,
        default_config={"scale": 4, "n_feats": 64, "n_blocks": 8, "n_colors": 3, "rgb_range": 255.0},
        tiny_config={"n_feats": 4, "n_blocks": 2},
        paper="Li et al., Multi-scale Residual Network for Image Super-Resolution, ECCV 2018",
        value_range=255.0,
        receptive_field=36,
        footprint=lambda cfg: _FOOTPRINT.get(int(cfg.get("scale", 4)), 43_200) * cfg.get("n_feats", 64) / 64,
        config_for_scale=lambda s: {"scale": s},
    )
)

# The authors' DIV2K-trained checkpoints at a pinned commit of MIVRC/MSRN-PyTorch, each pinned by its git blob
# SHA-1. No restorekit-trained MSRN weights exist yet, so there is no hub source.
_UPSTREAM = (
    "https://raw.githubusercontent.com/MIVRC/MSRN-PyTorch/a0e038de7eb42e21d2e88c38e6490b61a02c566e/MSRN/Test/model/"
)
_AUTHORS = dict(
    license="MIT (MIVRC/MSRN-PyTorch)",
    origin="MIVRC/MSRN-PyTorch MSRN/Test/model, converted to safetensors on first use",
    paper="Li, Fang, Mei, Zhang. Multi-scale Residual Network for Image Super-Resolution. ECCV 2018",
    notes="restorekit's own hub weights are not published yet; the authors' checkpoint is used meanwhile",
)

# Reported figures: the authors' README, RGB-retrained model (Y-channel PSNR/SSIM, shave = scale), not yet measured
# here; none for x8.
register_weights(
    WeightRecord.named(
        "msrn.sr_x2",
        task="sr",
        scale=2,
        description="MSRN x2 bicubic super-resolution (RGB), the authors' DIV2K-trained weights",
        config={**SPEC.default_config, "scale": 2},
        params=5_930_331,
        upstream=UrlSource(_UPSTREAM + "MSRN_x2.pt", git_blob_sha1="3f8567d12441e9c325d9dc476f5751ac22f34cae"),
        metrics=psnr_ssim(
            "y_shave_scale",
            ("Set5", 38.07, 0.9608),
            ("Set14", 33.68, 0.9184),
            ("B100", 32.22, 0.9002),
            ("Urban100", 32.32, 0.9304),
        ),
        **_AUTHORS,
    ),
    WeightRecord.named(
        "msrn.sr_x3",
        task="sr",
        scale=3,
        description="MSRN x3 bicubic super-resolution (RGB), the authors' DIV2K-trained weights",
        config={**SPEC.default_config, "scale": 3},
        params=6_114_971,
        upstream=UrlSource(_UPSTREAM + "MSRN_x3.pt", git_blob_sha1="67f33904a6363c4222bd489b537da15abc7f8664"),
        metrics=psnr_ssim(
            "y_shave_scale",
            ("Set5", 34.48, 0.9276),
            ("Set14", 30.40, 0.8436),
            ("B100", 29.13, 0.8061),
            ("Urban100", 28.31, 0.8560),
        ),
        **_AUTHORS,
    ),
    WeightRecord.named(
        "msrn.sr_x4",
        task="sr",
        scale=4,
        description="MSRN x4 bicubic super-resolution (RGB), the authors' DIV2K-trained weights",
        config={**SPEC.default_config, "scale": 4},
        params=6_078_043,
        upstream=UrlSource(_UPSTREAM + "MSRN_x4.pt", git_blob_sha1="b33bab1e672cdbd3d6d96feda47f3e52bae44df6"),
        metrics=psnr_ssim(
            "y_shave_scale",
            ("Set5", 32.25, 0.8958),
            ("Set14", 28.63, 0.7833),
            ("B100", 27.61, 0.7377),
            ("Urban100", 26.22, 0.7905),
        ),
        default=True,
        **_AUTHORS,
    ),
    WeightRecord.named(
        "msrn.sr_x8",
        task="sr",
        scale=8,
        description="MSRN x8 bicubic super-resolution (RGB), the authors' DIV2K-trained weights",
        config={**SPEC.default_config, "scale": 8},
        params=6_225_755,
        upstream=UrlSource(_UPSTREAM + "MSRN_x8.pt", git_blob_sha1="f78d601b1b056e72e2ec53d5d1784476db014dd5"),
        **_AUTHORS,
    ),
)
