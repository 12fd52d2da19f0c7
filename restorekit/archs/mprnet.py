"""MPRNet: multi-stage progressive image restoration (deblurring, denoising, deraining).

Zamir, Arora, Khan, Hayat, Khan, Yang, Shao, "Multi-Stage Progressive Image Restoration", CVPR 2021.
Faithful to the authors' PyTorch model (swz30/MPRNet ``{Deblurring,Denoising,Deraining}/MPRNet.py``)
and to PaddleGAN's port (``ppgan/models/generators/mpr.py``): the module names below are theirs, so
their checkpoints load after one remapping. The three variants differ only in their widths.

Two stages of U-Nets work on image patches (four quarters, then two halves), a supervised attention
module (SAM) hands each stage's features and image to the next, and a full-resolution subnetwork
(ORSNet) finishes. Every channel-attention block (CAB) of the authors' model calls the same single
``nn.PReLU``; their state dict therefore repeats that one tensor under 55 names. Ours holds it once,
as ``act.weight``, and :func:`_filter_checkpoint` folds the 55 aliases into it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConversionError, InputError
from ..policy import ArchPolicy, InferencePolicy
from ..registry import ArchSpec, UrlSource, WeightRecord, psnr_ssim, register_arch, register_weights

SIZE_MULTIPLE = 8  # two 2x downsamplings inside each quarter patch of a 2x2 split


def _conv(cin: int, cout: int, k: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, padding=k // 2, bias=False)  # the authors' models have no biases at all


class SharedAct(nn.Module):
    """Calls an activation owned by another module without registering it here.

    It sits where the authors' ``nn.Sequential`` has the shared PReLU, so the neighbouring convs keep
    their indices (``body.0``, ``body.2``) while the PReLU's parameter lives in one place only.
    """

    def __init__(self, act: nn.Module) -> None:
        super().__init__()
        object.__setattr__(self, "act", act)  # a plain attribute: not a submodule, not in state_dict()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x)

    def extra_repr(self) -> str:
        return f"shared {self.act!r}"


class Resize(nn.Module):
    """Bilinear rescale by a fixed factor (align_corners=False), as the authors' ``nn.Upsample``."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=self.factor, mode="bilinear", align_corners=False)


class CALayer(nn.Module):
    """Channel attention: global average -> 1x1 squeeze -> ReLU -> 1x1 excite -> sigmoid gate."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        self.conv_du = nn.Sequential(
            _conv(channels, channels // reduction, 1),
            nn.ReLU(inplace=True),
            _conv(channels // reduction, channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.conv_du(x.mean(dim=(2, 3), keepdim=True))


class CAB(nn.Module):
    """Channel-attention block: conv -> shared PReLU -> conv -> channel attention, plus the input."""

    def __init__(self, channels: int, kernel_size: int, reduction: int, act: nn.Module) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _conv(channels, channels, kernel_size), SharedAct(act), _conv(channels, channels, kernel_size)
        )
        self.CA = CALayer(channels, reduction)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.CA(self.body(x)) + x


def _cabs(n: int, channels: int, kernel_size: int, reduction: int, act: nn.Module) -> list[nn.Module]:
    return [CAB(channels, kernel_size, reduction, act) for _ in range(n)]


class SAM(nn.Module):
    """Supervised attention module: predicts the stage's image and gates the features with it."""

    def __init__(self, channels: int, kernel_size: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv(channels, channels, kernel_size)
        self.conv2 = _conv(channels, 3, kernel_size)
        self.conv3 = _conv(3, channels, kernel_size)

    def forward(self, x: torch.Tensor, x_img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        img = self.conv2(x) + x_img
        return self.conv1(x) * torch.sigmoid(self.conv3(img)) + x, img


class DownSample(nn.Module):
    """Half resolution, ``cin`` -> ``cin + step`` channels."""

    def __init__(self, cin: int, step: int) -> None:
        super().__init__()
        self.down = nn.Sequential(Resize(0.5), _conv(cin, cin + step, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(x)


class UpSample(nn.Module):
    """Double resolution, ``cout + step`` -> ``cout`` channels."""

    def __init__(self, cout: int, step: int) -> None:
        super().__init__()
        self.up = nn.Sequential(Resize(2.0), _conv(cout + step, cout, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(x)


class SkipUpSample(UpSample):
    """:class:`UpSample`, then add the skip connection."""

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.up(x) + skip


class Encoder(nn.Module):
    """Three levels (n, n+s, n+2s channels) of two CABs; stage 2's adds stage 1's features (CSFF)."""

    def __init__(self, n: int, s: int, kernel_size: int, reduction: int, act: nn.Module, csff: bool) -> None:
        super().__init__()
        widths = (n, n + s, n + 2 * s)
        self.encoder_level1 = nn.Sequential(*_cabs(2, widths[0], kernel_size, reduction, act))
        self.encoder_level2 = nn.Sequential(*_cabs(2, widths[1], kernel_size, reduction, act))
        self.encoder_level3 = nn.Sequential(*_cabs(2, widths[2], kernel_size, reduction, act))
        self.down12 = DownSample(n, s)
        self.down23 = DownSample(n + s, s)
        self.csff = csff
        if csff:
            for i, c in enumerate(widths, 1):
                setattr(self, f"csff_enc{i}", _conv(c, c, 1))
                setattr(self, f"csff_dec{i}", _conv(c, c, 1))

    def forward(
        self,
        x: torch.Tensor,
        encoder_outs: list[torch.Tensor] | None = None,
        decoder_outs: list[torch.Tensor] | None = None,
    ) -> list[torch.Tensor]:
        levels = (self.encoder_level1, self.encoder_level2, self.encoder_level3)
        downs = (self.down12, self.down23, None)
        outs = []
        for i, (level, down) in enumerate(zip(levels, downs)):
            x = level(x)
            if self.csff and encoder_outs is not None and decoder_outs is not None:
                enc, dec = getattr(self, f"csff_enc{i + 1}"), getattr(self, f"csff_dec{i + 1}")
                x = x + enc(encoder_outs[i]) + dec(decoder_outs[i])
            outs.append(x)
            if down is not None:
                x = down(x)
        return outs


class Decoder(nn.Module):
    """Mirror of :class:`Encoder`, with CAB skip attention on the level-1 and level-2 skips."""

    def __init__(self, n: int, s: int, kernel_size: int, reduction: int, act: nn.Module) -> None:
        super().__init__()
        self.decoder_level1 = nn.Sequential(*_cabs(2, n, kernel_size, reduction, act))
        self.decoder_level2 = nn.Sequential(*_cabs(2, n + s, kernel_size, reduction, act))
        self.decoder_level3 = nn.Sequential(*_cabs(2, n + 2 * s, kernel_size, reduction, act))
        self.skip_attn1 = CAB(n, kernel_size, reduction, act)
        self.skip_attn2 = CAB(n + s, kernel_size, reduction, act)
        self.up21 = SkipUpSample(n, s)
        self.up32 = SkipUpSample(n + s, s)

    def forward(self, outs: list[torch.Tensor]) -> list[torch.Tensor]:
        enc1, enc2, enc3 = outs
        dec3 = self.decoder_level3(enc3)
        dec2 = self.decoder_level2(self.up32(dec3, self.skip_attn2(enc2)))
        dec1 = self.decoder_level1(self.up21(dec2, self.skip_attn1(enc1)))
        return [dec1, dec2, dec3]


class ORB(nn.Module):
    """Original-resolution block: ``num_cab`` CABs and a conv, plus the input."""

    def __init__(self, channels: int, kernel_size: int, reduction: int, act: nn.Module, num_cab: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *_cabs(num_cab, channels, kernel_size, reduction, act), _conv(channels, channels, kernel_size)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + x


class ORSNet(nn.Module):
    """Three ORBs at full resolution; after each, stage 2's encoder/decoder level k is added back."""

    def __init__(self, n: int, o: int, s: int, kernel_size: int, reduction: int, act: nn.Module, num_cab: int) -> None:
        super().__init__()
        self.orb1 = ORB(n + o, kernel_size, reduction, act, num_cab)
        self.orb2 = ORB(n + o, kernel_size, reduction, act, num_cab)
        self.orb3 = ORB(n + o, kernel_size, reduction, act, num_cab)
        self.up_enc1 = UpSample(n, s)
        self.up_dec1 = UpSample(n, s)
        self.up_enc2 = nn.Sequential(UpSample(n + s, s), UpSample(n, s))
        self.up_dec2 = nn.Sequential(UpSample(n + s, s), UpSample(n, s))
        for i in (1, 2, 3):
            setattr(self, f"conv_enc{i}", _conv(n, n + o, 1))
            setattr(self, f"conv_dec{i}", _conv(n, n + o, 1))

    def forward(self, x: torch.Tensor, enc: list[torch.Tensor], dec: list[torch.Tensor]) -> torch.Tensor:
        x = self.orb1(x) + self.conv_enc1(enc[0]) + self.conv_dec1(dec[0])
        x = self.orb2(x) + self.conv_enc2(self.up_enc1(enc[1])) + self.conv_dec2(self.up_dec1(dec[1]))
        x = self.orb3(x) + self.conv_enc3(self.up_enc2(enc[2])) + self.conv_dec3(self.up_dec2(dec[2]))
        return x


class MPRNet(nn.Module):
    """MPRNet; RGB in [0, 1] of any size divisible by 8 -> ``[final, stage2, stage1]`` images, same size.

    >>> MPRNet(n_feat=8, scale_unetfeats=4, scale_orsnetfeats=4, num_cab=1)(torch.rand(1, 3, 16, 24))[0].shape
    torch.Size([1, 3, 16, 24])
    """

    def __init__(
        self,
        *,
        n_feat: int = 96,
        scale_unetfeats: int = 48,
        scale_orsnetfeats: int = 32,
        num_cab: int = 8,
        kernel_size: int = 3,
        reduction: int = 4,
    ) -> None:
        super().__init__()
        n, s, o, k, r = n_feat, scale_unetfeats, scale_orsnetfeats, kernel_size, reduction
        self.act = nn.PReLU()  # the one PReLU every CAB uses (55 aliases in the authors' state dict)
        self.shallow_feat1 = nn.Sequential(_conv(3, n, k), CAB(n, k, r, self.act))
        self.shallow_feat2 = nn.Sequential(_conv(3, n, k), CAB(n, k, r, self.act))
        self.shallow_feat3 = nn.Sequential(_conv(3, n, k), CAB(n, k, r, self.act))
        self.stage1_encoder = Encoder(n, s, k, r, self.act, csff=False)
        self.stage1_decoder = Decoder(n, s, k, r, self.act)
        self.stage2_encoder = Encoder(n, s, k, r, self.act, csff=True)
        self.stage2_decoder = Decoder(n, s, k, r, self.act)
        self.stage3_orsnet = ORSNet(n, o, s, k, r, self.act, num_cab)
        self.sam12 = SAM(n, kernel_size=1)
        self.sam23 = SAM(n, kernel_size=1)
        self.concat12 = _conv(2 * n, n, k)
        self.concat23 = _conv(2 * n, n + o, k)
        self.tail = _conv(n + o, 3, k)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        n, _, h, w = x.shape
        if h % SIZE_MULTIPLE or w % SIZE_MULTIPLE:
            raise InputError(
                f"MPRNet needs a height and width divisible by {SIZE_MULTIPLE}, got {h}x{w}; "
                "pad the image (restorekit.Restorer pads and crops back for you)"
            )
        hh, hw = h // 2, w // 2
        # The patches of a stage share the stage's weights and every op works per sample (the channel
        # attention pools each sample alone), so they run as one batch: [top; bottom] halves and
        # [left-top; right-top; left-bottom; right-bottom] quarters.
        halves = torch.cat([x[:, :, :hh], x[:, :, hh:]], 0)
        quarters = torch.cat([halves[..., :hw], halves[..., hw:]], 0)  # [lt; lb; rt; rb]

        # Stage 1: each quarter encoded alone, left and right joined along the width, decoded per half.
        feat1 = self.stage1_encoder(self.shallow_feat1(quarters))
        feat1 = [torch.cat(f.chunk(2, 0), 3) for f in feat1]  # [top; bottom] halves
        res1 = self.stage1_decoder(feat1)
        sam1_feat, img1 = self.sam12(res1[0], halves)
        stage1_img = torch.cat(img1.chunk(2, 0), 2)

        # Stage 2: per half, with stage 1's features fused in; the halves joined along the height.
        x2 = self.concat12(torch.cat([self.shallow_feat2(halves), sam1_feat], 1))
        feat2 = self.stage2_encoder(x2, feat1, res1)
        feat2 = [torch.cat(f.chunk(2, 0), 2) for f in feat2]
        res2 = self.stage2_decoder(feat2)
        sam2_feat, stage2_img = self.sam23(res2[0], x)

        # Stage 3: full resolution.
        x3 = self.concat23(torch.cat([self.shallow_feat3(x), sam2_feat], 1))
        x3 = self.stage3_orsnet(x3, feat2, res2)
        return [self.tail(x3) + x, stage2_img, stage1_img]


def _build(**config: Any) -> MPRNet:
    return MPRNet(**config)


def _act_aliases(config: Mapping[str, Any]) -> list[str]:
    """The 55 paths under which the authors' state dict repeats the shared PReLU (``<cab>.body.1``)."""
    with torch.device("meta"):
        net = MPRNet(**config)
    return [f"{name}.body.1" for name, m in net.named_modules() if isinstance(m, CAB)]


def _filter_checkpoint(state_dict: dict[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """Fold the shared PReLU's aliases (torch ``.weight``, Paddle ``._weight``) into our ``act.weight``."""
    out = dict(state_dict)
    found: dict[str, Any] = {}
    for path in _act_aliases(config):
        for suffix in (".weight", "._weight"):
            if path + suffix in out:
                found[path + suffix] = out.pop(path + suffix)
    if not found:
        return out  # our own layout (act.weight), or a file the shape check will report on
    first_key, first = next(iter(found.items()))
    if not isinstance(first, torch.Tensor):
        raise ConversionError(
            f"{first_key} is a {type(first).__name__}, not a tensor; this is not an MPRNet state dict"
        )
    differ = [k for k, v in found.items() if not (isinstance(v, torch.Tensor) and torch.equal(v, first))]
    if differ:
        raise ConversionError(
            f"the checkpoint's copies of MPRNet's shared PReLU disagree: {first_key} differs from "
            f"{', '.join(differ[:3])}{' ...' if len(differ) > 3 else ''} ({len(differ)} of {len(found)}). "
            "The authors' model has one PReLU for every CAB, so these must be one tensor; this file was "
            "not saved from that model (or was edited), so it cannot be loaded as MPRNet"
        )
    if "act.weight" in out and not torch.equal(out["act.weight"], first):
        raise ConversionError(
            "the checkpoint has both act.weight and the authors' PReLU aliases, and they differ; "
            "keep one layout (re-export the authors' file unchanged, or save our state dict)"
        )
    out["act.weight"] = first
    return out


# Peak activation bytes per input pixel, fp32, CPU inference, by width (n_feat), measured with
# `python tests/benchmarks/footprint.py mprnet.deblur mprnet.denoise mprnet.derain --size 256`
# (9,559 / 7,037 / 4,286; at --size 512 deblur measures 7,115: the 256 figures are the safer bound).
_FOOTPRINT = {96: 9_560.0, 80: 7_040.0, 40: 4_290.0}

SPEC = register_arch(
    ArchSpec(
        name="mprnet",
        # channels_last on the CPU: 0.95 at 128 px, 0.56 at 256 px of contiguous time, same results
        # (python tests/benchmarks/bench_policy.py --size 256 --repeats 4 --no-compile; docs/performance.md).
        policy=ArchPolicy(cpu=InferencePolicy(memory_format="channels_last")),
        build=_build,
        default_config={
            "n_feat": 96,
            "scale_unetfeats": 48,
            "scale_orsnetfeats": 32,
            "num_cab": 8,
            "kernel_size": 3,
            "reduction": 4,
        },
        tiny_config={"n_feat": 8, "scale_unetfeats": 4, "scale_orsnetfeats": 4, "num_cab": 1},
        paper="Zamir et al., Multi-Stage Progressive Image Restoration, CVPR 2021",
        # The channel attention pools over the whole image: the receptive field is global, tiles are blended.
        receptive_field=None,
        footprint=lambda cfg: _FOOTPRINT.get(int(cfg.get("n_feat", 96)), 9_560.0 * cfg.get("n_feat", 96) / 96),
        select_output=lambda out: out[0],
        filter_checkpoint=_filter_checkpoint,
        size_multiple=SIZE_MULTIPLE,
    )
)

_PAPER = (
    "Zamir, Arora, Khan, Hayat, Khan, Yang, Shao. Multi-Stage Progressive Image Restoration. CVPR 2021. "
    "arXiv:2102.02808"
)
LICENSE = "MPRNet Academic Public License (swz30/MPRNet LICENSE.md): non-commercial use only"
LICENSE_NOTICE = (
    "MPRNet weights are under the authors' academic public license: free for non-commercial use "
    "(teaching, research, personal work) with credit; commercial use needs the authors' permission "
    "(see swz30/MPRNet LICENSE.md)."
)
# PaddleGAN's port of the authors' models. PaddleGAN publishes no checksum for these files (none found in its code,
# docs or issues), so none is invented here: resolve() fetches them only with trust on first use
# (RESTOREKIT_ALLOW_UNPINNED=1). No restorekit-made copy is on the hub.
_PADDLEGAN = dict(
    license=LICENSE,
    license_notice=LICENSE_NOTICE,
    paper=_PAPER,
    notes="restorekit's own hub copy is not published yet; PaddleGAN's file has no published checksum, so "
    "its download needs RESTOREKIT_ALLOW_UNPINNED=1 (trust on first use; the sha256 is logged and kept). "
    "Metrics are the paper's (reported, not measured here)",
)

# Reported figures: the paper's tables, as the authors' evaluation scripts measure them (swz30/MPRNet): RGB for
# deblurring (evaluate_GOPRO_HIDE.m) and denoising, the Y channel for deraining (Deraining/evaluate_PSNR_SSIM.m).
register_weights(
    WeightRecord.named(
        "mprnet.deblur",
        task="deblur",
        description="MPRNet motion deblurring (GoPro-trained)",
        config={**SPEC.default_config, "n_feat": 96, "scale_unetfeats": 48, "scale_orsnetfeats": 32},
        params=20_127_073,
        upstream=UrlSource(
            "https://paddlegan.bj.bcebos.com/models/MPR_Deblurring.pdparams", format="paddle", pinned=False
        ),
        origin="PaddleGAN's published MPR_Deblurring.pdparams (its port of the authors' model), "
        "converted to safetensors on first use",
        metrics=psnr_ssim("full_image", ("GoPro", 32.66, 0.959), ("HIDE", 30.96, 0.939)),
        default=True,
        **_PADDLEGAN,
    ),
    WeightRecord.named(
        "mprnet.denoise",
        task="denoise",
        description="MPRNet real-noise denoising (SIDD-trained)",
        config={**SPEC.default_config, "n_feat": 80, "scale_unetfeats": 48, "scale_orsnetfeats": 32},
        params=15_741_025,
        upstream=UrlSource(
            "https://paddlegan.bj.bcebos.com/models/MPR_Denoising.pdparams", format="paddle", pinned=False
        ),
        origin="PaddleGAN's published MPR_Denoising.pdparams (its port of the authors' model), "
        "converted to safetensors on first use",
        metrics=psnr_ssim("full_image", ("SIDD", 39.71, 0.958), ("DND", 39.80, 0.954)),
        **_PADDLEGAN,
    ),
    WeightRecord.named(
        "mprnet.derain",
        task="derain",
        description="MPRNet deraining (trained on the 13,712-pair rain mixture)",
        config={**SPEC.default_config, "n_feat": 40, "scale_unetfeats": 20, "scale_orsnetfeats": 16},
        params=3_637_249,
        upstream=UrlSource(
            "https://paddlegan.bj.bcebos.com/models/MPR_Deraining.pdparams", format="paddle", pinned=False
        ),
        origin="PaddleGAN's published MPR_Deraining.pdparams (its port of the authors' model), "
        "converted to safetensors on first use",
        metrics=psnr_ssim(
            "y_full",
            ("Test100", 30.27, 0.897),
            ("Rain100H", 30.41, 0.890),
            ("Rain100L", 36.40, 0.965),
            ("Test2800", 33.64, 0.938),
            ("Test1200", 32.91, 0.916),
        ),
        **_PADDLEGAN,
    ),
)
