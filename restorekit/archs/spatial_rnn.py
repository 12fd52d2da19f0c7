"""Spatial RNN (LRNN): a guidance CNN predicts per-pixel gates, linear recurrences do the filtering.

Liu, Pan, Yang, "Learning Recursive Filters for Low-Level Vision via a Hybrid Neural Network",
ECCV 2016. Layer names follow the authors' ``LRNN_v1.prototxt`` (conv0 ... conv11, conv6s) so a
converted Caffe model maps one to one; every line here is restorekit's own.

- **Input** (v1): RGB - 0.5 plus the x/y gradients of grey (5 channels); v2 is RGB only.
- **RNN input**: conv0 (3x3 -> 3) max-pooled x2/x4/x8 and resized back, concatenated with conv0
  (12 channels), conv1 (3x3 -> 16, no activation).
- **Guidance U-Net** (ReLU after each conv): conv2 5x5 (v1 on the 2 gradients, v2 on RGB) -> 16,
  pool, conv3 -> 32, pool, conv4 -> 32, pool, conv5 -> 32, pool, conv6 -> 64 (1/16), up, conv6s,
  up + conv4 -> conv7 -> 32, up + conv3 -> conv8 -> 16, up + conv2 -> conv9 3x3 -> 64, tanh, split
  into four 16-channel gates x1, y1, x2, y2.
- **Eight scans** (``restorekit.ops.scan``): layer 1 on the RNN input, L->R and R->L with x1, T->B
  and B->T with y1; layer 2 continues each direction with x2/y2; element-wise max of the four.
- **Output**: conv10 3x3 -> 64 + ReLU, conv11 3x3 -> 3, sigmoid (v2: ReLU).

Any input size: the pooled branches and the U-Net run on the input replicate-padded to a multiple
of 16 and are cropped back before the scans, so the recurrences see exactly the image.

Masked tasks (``condition``): the network then takes one more input channel, a mask in [0, 1]
(1 = known), and feeds extra channels to conv0 and conv2:

- ``"mask"`` (inpainting): unknown pixels are set to mid-grey, extra channel = the mask;
- ``"hints"`` (colourisation): the base image is the grey (BT.601 luma) of the input, extra
  channels = (RGB - 0.5) * mask (the known colours) and the mask.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..color import rgb_to_grey
from ..errors import ConversionError, InputError
from ..registry import ArchSpec, BundledSource, WeightRecord, psnr_ssim, register_arch, register_weights

_MULTIPLE = 16  # four 2x poolings in the guidance U-Net
_EXTRA = {None: 0, "mask": 1, "hints": 4}


def caffe_resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize as the authors' Caffe code does it (separable, per axis).

    Output index i samples the input at i * (n_in / n_out), no half-pixel offset; a neighbour that
    falls outside the input is dropped without renormalising the other weight, so the last
    row/column of an upsampled map is attenuated. (``F.interpolate(..., align_corners=False)``
    differs by the half-pixel offset; ``True`` by the scale.)
    """
    for axis, n_out in ((-2, size[0]), (-1, size[1])):
        n_in = x.shape[axis]
        if n_in == n_out:
            continue
        pos = torch.arange(n_out, dtype=torch.float64) * (n_in / n_out)
        i0 = pos.floor().long()
        frac = (pos - i0).to(x.dtype)
        i1 = i0 + 1
        inside = (i1 < n_in).to(x.dtype)
        shape = [n_out if d == x.ndim + axis else 1 for d in range(x.ndim)]
        w0 = (1 - frac).view(shape).to(x.device)
        w1 = (frac * inside).view(shape).to(x.device)
        i0, i1 = i0.to(x.device), i1.clamp(max=n_in - 1).to(x.device)
        x = x.index_select(axis, i0) * w0 + x.index_select(axis, i1) * w1
    return x


def _conv(cin: int, cout: int, k: int = 3) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, padding=k // 2)


class SpatialRNN(nn.Module):
    """LRNN v1/v2; input RGB in [0, 1] (plus a mask channel when ``condition`` is set), output RGB.

    >>> SpatialRNN(channels=4, guide=(4, 4, 4, 4, 4), head=4)(torch.rand(1, 3, 5, 7)).shape
    torch.Size([1, 3, 5, 7])
    """

    def __init__(
        self,
        *,
        variant: str = "v1",
        channels: int = 16,
        pool_channels: int = 3,
        guide: Sequence[int] = (16, 32, 32, 32, 64),
        head: int = 64,
        condition: str | None = None,
    ) -> None:
        super().__init__()
        if variant not in ("v1", "v2"):
            raise ValueError(f"variant must be 'v1' (RGB + gradients) or 'v2' (RGB only), not {variant!r}")
        if condition not in _EXTRA:
            raise ValueError(f"condition must be None, 'mask' or 'hints', not {condition!r}")
        g0, g1, g2, g3, g4 = guide
        self.variant, self.condition, self.channels = variant, condition, channels
        # The mask rides as one more input channel (callers read ArchSpec.condition_for; restorekit.feeding packs it).
        self.mask_channels = 1 if condition else 0
        extra = _EXTRA[condition]
        rnn_in = (5 if variant == "v1" else 3) + extra
        guide_in = (2 if variant == "v1" else 3) + extra
        self.conv0 = _conv(rnn_in, pool_channels)
        self.conv1 = _conv(4 * pool_channels, channels)
        self.conv2 = _conv(guide_in, g0, 5)
        self.conv3 = _conv(g0, g1)
        self.conv4 = _conv(g1, g2)
        self.conv5 = _conv(g2, g3)
        self.conv6 = _conv(g3, g4)
        self.conv6s = _conv(g4, g4)
        self.conv7 = _conv(g4 + g2, g1)
        self.conv8 = _conv(g1 + g1, g0)
        self.conv9 = _conv(g0 + g0, 4 * channels)
        self.conv10 = _conv(channels, head)
        self.conv11 = _conv(head, 3)

    # ---------------------------------------------------------------- inputs
    def _inputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(RNN-branch input, guidance input) at the image size."""
        want = 3 + self.mask_channels
        if x.ndim != 4 or x.shape[1] != want:
            what = "RGB plus a mask channel" if self.mask_channels else "RGB"
            raise InputError(
                f"spatial_rnn ({self.condition or 'plain'}) takes {what}: (N, {want}, H, W), got {tuple(x.shape)}"
            )
        rgb, extras = x[:, :3], []
        if self.condition == "mask":
            mask = x[:, 3:4]
            rgb = rgb * mask + 0.5 * (1 - mask)
            extras = [mask]
        grey = rgb_to_grey(rgb)  # BT.601 luma, as Pillow's "L"
        if self.condition == "hints":
            mask = x[:, 3:4]
            extras = [(rgb - 0.5) * mask, mask]
            rgb = grey.expand(-1, 3, -1, -1)  # the network sees the grey image; its luma is that grey
        centred = rgb - 0.5
        if self.variant == "v2":
            return torch.cat([centred, *extras], 1), torch.cat([centred, *extras], 1)
        gx = F.pad(grey[..., :, 1:] - grey[..., :, :-1], (0, 1, 0, 0))  # forward differences, 0 at the far edge
        gy = F.pad(grey[..., 1:, :] - grey[..., :-1, :], (0, 0, 0, 1))
        return torch.cat([centred, gx, gy, *extras], 1), torch.cat([gx, gy, *extras], 1)

    # ---------------------------------------------------------------- branches
    def _rnn_input(self, x: torch.Tensor) -> torch.Tensor:
        c0 = self.conv0(x)
        size = tuple(c0.shape[-2:])
        pooled = [caffe_resize(F.max_pool2d(c0, k), size) for k in (2, 4, 8)]
        return self.conv1(torch.cat([c0, *pooled], 1))

    def _gates(self, x: torch.Tensor) -> torch.Tensor:
        relu, pool = F.relu, F.max_pool2d

        def up(t: torch.Tensor) -> torch.Tensor:
            return caffe_resize(t, (2 * t.shape[-2], 2 * t.shape[-1]))

        e2 = relu(self.conv2(x))
        e3 = relu(self.conv3(pool(e2, 2)))
        e4 = relu(self.conv4(pool(e3, 2)))
        e5 = relu(self.conv5(pool(e4, 2)))
        e6 = relu(self.conv6(pool(e5, 2)))
        d = relu(self.conv6s(up(e6)))
        d = relu(self.conv7(torch.cat([up(d), e4], 1)))
        d = relu(self.conv8(torch.cat([up(d), e3], 1)))
        return torch.tanh(self.conv9(torch.cat([up(d), e2], 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from ..ops import scan

        h, w = x.shape[-2:]
        rnn_in, guide_in = self._inputs(x)
        ph, pw = (-h) % _MULTIPLE, (-w) % _MULTIPLE
        if ph or pw:
            rnn_in = F.pad(rnn_in, (0, pw, 0, ph), mode="replicate")
            guide_in = F.pad(guide_in, (0, pw, 0, ph), mode="replicate")
        feats = self._rnn_input(rnn_in)[..., :h, :w]
        x1, y1, x2, y2 = self._gates(guide_in)[..., :h, :w].chunk(4, 1)
        # Two cascaded scans per direction; opposite directions share a gate map.
        first = [scan(feats, x1, True, False), scan(feats, x1, True, True)]
        first += [scan(feats, y1, False, False), scan(feats, y1, False, True)]
        merged = None
        for h1, gate, (horizontal, reverse) in zip(
            first, (x2, x2, y2, y2), ((True, False), (True, True), (False, False), (False, True))
        ):
            h2 = scan(h1, gate, horizontal, reverse)
            merged = h2 if merged is None else torch.maximum(merged, h2)
        y = self.conv11(F.relu(self.conv10(merged)))
        return torch.sigmoid(y) if self.variant == "v1" else F.relu(y)


def _build(**config: Any) -> SpatialRNN:
    return SpatialRNN(**config)


# Coldog2333/Spatial-RNN, a PyTorch re-implementation, names its modules DCNN.conv1 ... DCNN.conv9 (the guidance
# network), LRNN_in_conv and LRNN_out_conv.
_COLDOG_KEYS = ("DCNN.", "LRNN_in_conv.", "LRNN_out_conv.")


def _filter_checkpoint(state_dict: dict[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """Our keys pass unchanged (they are the authors' Caffe layer names); a port's checkpoint is refused with the
    reason instead of a list of missing keys."""
    ported = [k for k in state_dict if isinstance(k, str) and k.startswith(_COLDOG_KEYS)]
    if ported:
        raise ConversionError(
            f"this checkpoint is from Coldog2333/Spatial-RNN (keys such as {ported[0]}), a PyTorch port that "
            "restorekit does not support: it is another network than the authors' LRNN v1 that restorekit "
            "implements (a 15-channel input of RGB and pooled copies, single scans in parallel instead of two "
            "cascaded per direction, one output convolution instead of conv10 + conv11), so its weights cannot be "
            "mapped onto it. Use restorekit's bundled weights (Restorer('spatial_rnn.denoise') and the other "
            "spatial_rnn models) or train your own with restorekit-train."
        )
    return dict(state_dict)


# Peak activation bytes per input pixel, fp32, full size (tests/benchmarks/footprint.py, 256x256, CPU).
_FOOTPRINT = 2_000.0  # measured 1,972 (native scans)

SPEC = register_arch(
    ArchSpec(
        name="spatial_rnn",
        build=_build,
        default_config={
            "variant": "v1",
            "channels": 16,
            "pool_channels": 3,
            "guide": [16, 32, 32, 32, 64],  # a list: configs round-trip through JSON
            "head": 64,
            "condition": None,
        },
        tiny_config={"channels": 4, "pool_channels": 2, "guide": [4, 4, 4, 4, 4], "head": 4},
        paper="Liu, Pan, Yang. Learning Recursive Filters for Low-Level Vision via a Hybrid Neural Network. ECCV 2016",
        receptive_field=None,  # the scans reach along whole rows and columns
        footprint=_FOOTPRINT,
        filter_checkpoint=_filter_checkpoint,
        # The config's condition: None (denoise, smooth_l0), "mask" (inpaint) or "hints" (colorize). No size
        # multiple: the network pads its pooled branches itself (see the module docstring).
        condition=lambda config: config["condition"],
    )
)

_PAPER = SPEC.paper

# The weights restorekit trained and ships inside the package (restorekit/weights/, fp16 safetensors): digest and
# size of each file, the training run, and what `restorekit eval` measured on the shipped file (commands in
# docs/spatial_rnn.md), through the Restorer with its mirrored border (16 px; none for the masked models).
# Parameter counts: v1 147,677 (the authors' prototxt; checked by tests). The conditioned variants add 3 (conv0)
# + 16 * 25 (conv2) weights per extra input channel.
_SHIPPED = dict(in_channels=3, out_channels=3, license="MIT (restorekit)", paper=_PAPER)


def _training(preset: str, steps: int) -> str:
    return (
        f"restorekit-train fit --preset {preset} on BSD200 + T91 (291 colour images, no test image), "
        f"64-px patches, batch 16, Adam 5e-4 with cosine decay, {steps} steps, EMA 0.999; exported as fp16"
    )


register_weights(
    WeightRecord.named(
        "spatial_rnn.denoise",
        task="denoise",
        description="Spatial RNN (LRNN v1) Gaussian denoising (RGB)",
        config={**SPEC.default_config, "condition": None},
        params=147_677,
        bundled=BundledSource(
            "spatial_rnn_denoise.safetensors",
            sha256="cde0b2634692a40ab3c22ea6e191392811812ff8a12eafbd57bd2e884d4d2aa5",
            size=297_562,
        ),
        origin=_training("spatial_rnn.denoise", steps=6_000),
        metrics=psnr_ssim(
            "full_image",
            ("CBSD68 sigma 15", 32.19, 0.9071),
            ("CBSD68 sigma 25", 29.73, 0.8506),
            ("CBSD68 sigma 50", 25.18, 0.7053),
            ("BSD68 sigma 15 (grey)", 30.42, 0.8652),
            ("BSD68 sigma 25 (grey)", 27.93, 0.7858),
            ("BSD68 sigma 50 (grey)", 23.70, 0.6330),
            source="measured",
        ),
        default=True,
        notes="blind over sigma 0-50 (trained on colour; a grey image runs as three equal channels); "
        "the noisy input scores 24.61 / 20.17 / 14.15 dB on CBSD68 at sigma 15 / 25 / 50",
        **_SHIPPED,
    ),
    WeightRecord.named(
        "spatial_rnn.smooth_l0",
        task="smooth",
        description="Spatial RNN (LRNN v1) edge-preserving smoothing imitating L0 gradient minimisation (RGB)",
        config={**SPEC.default_config, "condition": None},
        params=147_677,
        bundled=BundledSource(
            "spatial_rnn_smooth_l0.safetensors",
            sha256="d827a2d04153c6b9b8c08698070663d89d5265c45b58ff32074d15ab678d28cf",
            size=297_562,
        ),
        origin=_training("spatial_rnn.smooth_l0", steps=5_000),
        metrics=psnr_ssim("full_image", ("CBSD68 vs L0 lambda 0.02", 30.33, 0.9388), source="measured"),
        notes="imitates restorekit.filters.l0_smooth(lam=0.02) (restorekit run l0smooth); the unfiltered input "
        "scores 26.87 dB / 0.7614 against the L0 output",
        **_SHIPPED,
    ),
    WeightRecord.named(
        "spatial_rnn.inpaint",
        task="inpaint",
        description="Spatial RNN (LRNN v1) inpainting: pass mask= (1 = known pixel, 0 = to fill)",
        config={**SPEC.default_config, "condition": "mask"},
        params=148_104,
        bundled=BundledSource(
            "spatial_rnn_inpaint.safetensors",
            sha256="d6148acf2338946884cf6bf2ba191d49d9fd1658516fc0938f519edd69bcdcc1",
            size=298_416,
        ),
        origin=_training("spatial_rnn.inpaint", steps=6_000),
        metrics=psnr_ssim("full_image", ("CBSD68 50% missing", 29.72, 0.8852), source="measured"),
        notes="trained with 50 % of the pixels missing at random; known pixels are returned unchanged; "
        "nearest-neighbour fill scores 26.68 dB / 0.8456 on the same masks",
        **_SHIPPED,
    ),
    WeightRecord.named(
        "spatial_rnn.colorize",
        task="colorize",
        description="Spatial RNN (LRNN v1) colourisation from sparse colour: pass the image and mask= "
        "(1 = its colour there is known)",
        config={**SPEC.default_config, "condition": "hints"},
        params=149_385,
        bundled=BundledSource(
            "spatial_rnn_colorize.safetensors",
            sha256="16303f65d5bb130a01e96107458ea8c7bfc85267e99dd47acf3533472f812024",
            size=300_986,
        ),
        origin=_training("spatial_rnn.colorize", steps=5_000),
        metrics=psnr_ssim("full_image", ("CBSD68 3% colour hints", 25.08, 0.9132), source="measured"),
        notes="trained with the colour known at 3 % of the pixels; the input's luma and hints are kept; the grey "
        "image with the hints pasted in scores 22.93 dB / 0.9207 (higher SSIM, lower PSNR)",
        **_SHIPPED,
    ),
)
