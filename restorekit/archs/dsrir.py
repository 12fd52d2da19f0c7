"""DSRIR: dynamic spatial refinement for progressive all-in-one image restoration (noise, rain, haze).

Wang et al., "DSRIR: Dynamic spatial refinement learning for progressive all-in-one image restoration",
Information Processing & Management, 2025. Faithful to the authors' PyTorch model (xfwang23/DSRIR
``model/DSRIR.py``): the module names below are theirs, so ``model_best.pth`` loads unchanged.

One 3x3 embedding is split three ways; three subnets (a 3-level U-Net, a 2-level U-Net and a
full-resolution stack) refine progressively, each followed by a pixel-wise refine unit (PRU) and an
uncertainty-supervised attention unit (USAU) that predicts an image and its uncertainty map. Patch
attention (PA) pools each feature map to a P x P grid and gates every block of the grid with its own
channel weights, so at each level the feature size must divide by its grid.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from ..policy import ArchPolicy, InferencePolicy
from ..registry import ArchSpec, BundledSource, WeightRecord, psnr_ssim, register_arch, register_weights

# Grids per level: SubNet1 8/4/2 at 1, 1/2 and 1/4 resolution, SubNet2 4/2 at 1 and 1/2, SubNet3 8/4/2/1
# at full resolution. Each level needs (size / 2^level) % grid == 0: 8 | H for SubNet1 (8, 2*4, 4*2) and
# SubNet3, 4 | H for SubNet2, and 4 | H for the two 2x bilinear downsamplings; lcm = 8.
SIZE_MULTIPLE = 8
_SN1_GRIDS = (8, 4, 2)
_SN2_GRIDS = (4, 2)
_SN3_GRIDS = (8, 4, 2, 1)
_SN1_BLOCKS = (2, 2, 2)
_SN2_BLOCKS = (2, 4)
_SN3_BLOCKS = 4  # PABs per PAG


def _conv(cin: int, cout: int, k: int, bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, padding=k // 2, bias=bias)


class PatchAttention(nn.Module):
    """Average-pool to a ``grid`` x ``grid`` map, squeeze/excite it, and scale each block by its weights."""

    def __init__(self, channels: int, reduction: int, grid: int) -> None:
        super().__init__()
        self.grid = grid
        self.conv_du = nn.Sequential(
            _conv(channels, channels // reduction, 1, bias=True),
            nn.ReLU(inplace=True),
            _conv(channels // reduction, channels, 1, bias=True),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        p = self.grid
        if h % p or w % p:
            raise InputError(
                f"DSRIR patch attention needs a {h}x{w} feature map divisible by its {p}x{p} grid; give the "
                f"network images whose sides divide by {SIZE_MULTIPLE} (restorekit.Restorer pads for you)"
            )
        weights = self.conv_du(F.adaptive_avg_pool2d(x, p))  # (b, c, p, p): one weight per channel per block
        blocks = x.view(b, c, p, h // p, p, w // p)
        return (blocks * weights[:, :, :, None, :, None]).view(b, c, h, w)


class PAB(nn.Module):
    """Patch-attention block: conv -> ReLU -> conv -> patch attention, plus the input."""

    def __init__(self, channels: int, kernel_size: int, reduction: int, grid: int) -> None:
        super().__init__()
        self.conv1 = _conv(channels, channels, kernel_size)
        self.act = nn.ReLU(inplace=True)
        self.conv2 = _conv(channels, channels, kernel_size)
        self.PA = PatchAttention(channels, reduction, grid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.PA(self.conv2(self.act(self.conv1(x)))) + x


def _pabs(n: int, channels: int, kernel_size: int, reduction: int, grid: int) -> nn.Sequential:
    return nn.Sequential(*(PAB(channels, kernel_size, reduction, grid) for _ in range(n)))


class PRU(nn.Module):
    """Pixel-wise refine unit: r = conv(x); r * sigmoid(conv(ReLU(conv(r)))) + x."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        self.conv = _conv(channels, channels, 3)
        self.fr = nn.Sequential(
            _conv(channels, channels // reduction, 3, bias=True),
            nn.ReLU(inplace=True),
            _conv(channels // reduction, channels, 3, bias=True),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.conv(x)
        return self.fr(r) * r + x


class PAG(nn.Module):
    """Patch-attention group: PABs over grids 8/4/2/1, then a conv, plus the input."""

    def __init__(self, channels: int, kernel_size: int, reduction: int, grids: tuple[int, ...]) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *(PAB(channels, kernel_size, reduction, g) for g in grids), _conv(channels, channels, kernel_size)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + x


class USAU(nn.Module):
    """Uncertainty-supervised attention unit: the stage's image, its uncertainty map, gated features."""

    def __init__(self, in_channels: int, channels: int, out_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.conv_in = _conv(in_channels, channels, kernel_size)
        self.conv_out = _conv(channels, out_channels, kernel_size)
        self.conv1 = _conv(channels, channels, 1)
        self.conv2 = _conv(channels, channels, 1)
        self.var_est = nn.Sequential(_conv(channels, channels, 3, bias=True), nn.LeakyReLU(0.1, inplace=True))
        self.var_map = nn.Sequential(_conv(channels, out_channels, 3, bias=True), nn.LeakyReLU(0.1, inplace=True))
        self.att_map = nn.Sequential(_conv(channels, channels, 1, bias=True), nn.Sigmoid())

    def forward(
        self, x: torch.Tensor, img: torch.Tensor, last: bool = False
    ) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
        fusion = self.conv1(x) + self.conv_in(img)
        restored = self.conv_out(fusion) + img
        var_est = self.var_est(fusion)
        var_map = self.var_map(var_est)
        feat = None if last else self.att_map(var_est) * self.conv2(x) + x  # the last stage's is unused
        return feat, restored, var_map


class DownSample(nn.Module):
    """Half resolution (bilinear), ``cin`` -> ``cin + step`` channels."""

    def __init__(self, cin: int, step: int) -> None:
        super().__init__()
        self.down = nn.Sequential(
            nn.Upsample(scale_factor=0.5, mode="bilinear", align_corners=False), _conv(cin, cin + step, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(x)


class UpSample(nn.Module):
    """Double resolution (bilinear), ``cout + step`` -> ``cout`` channels."""

    def __init__(self, cout: int, step: int) -> None:
        super().__init__()
        self.up = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False), _conv(cout + step, cout, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(x)


class SubNet1(nn.Module):
    """Three-level U-Net (n, n+s, n+2s channels; grids 8/4/2) with PAB skip attention, added."""

    def __init__(self, n: int, s: int, kernel_size: int, reduction: int) -> None:
        super().__init__()
        widths = (n, n + s, n + 2 * s)
        for i, (c, g, b) in enumerate(zip(widths, _SN1_GRIDS, _SN1_BLOCKS), 1):
            setattr(self, f"encoder{i}", _pabs(b, c, kernel_size, reduction, g))
        for i, (c, g, b) in reversed(list(enumerate(zip(widths, _SN1_GRIDS, _SN1_BLOCKS), 1))):
            setattr(self, f"decoder{i}", _pabs(b, c, kernel_size, reduction, g))
        self.down1 = DownSample(n, s)
        self.down2 = DownSample(n + s, s)
        self.up1 = UpSample(n, s)
        self.up2 = UpSample(n + s, s)
        self.skipatt2 = PAB(n + s, kernel_size, reduction, _SN1_GRIDS[1])
        self.skipatt1 = PAB(n, kernel_size, reduction, _SN1_GRIDS[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.encoder1(x)
        e2 = self.encoder2(self.down1(e1))
        e3 = self.encoder3(self.down2(e2))
        d2 = self.decoder2(self.up2(self.decoder3(e3)) + self.skipatt2(e2))
        return self.decoder1(self.up1(d2) + self.skipatt1(e1))


class SubNet2(nn.Module):
    """Two-level U-Net (n, n+s channels; grids 4/2; 2 and 4 PABs) with PAB skip attention."""

    def __init__(self, n: int, s: int, kernel_size: int, reduction: int) -> None:
        super().__init__()
        self.encoder1 = _pabs(_SN2_BLOCKS[0], n, kernel_size, reduction, _SN2_GRIDS[0])
        self.encoder2 = _pabs(_SN2_BLOCKS[1], n + s, kernel_size, reduction, _SN2_GRIDS[1])
        self.decoder2 = _pabs(_SN2_BLOCKS[1], n + s, kernel_size, reduction, _SN2_GRIDS[1])
        self.decoder1 = _pabs(_SN2_BLOCKS[0], n, kernel_size, reduction, _SN2_GRIDS[0])
        self.down1 = DownSample(n, s)
        self.up1 = UpSample(n, s)
        self.skipatt1 = PAB(n, kernel_size, reduction, _SN2_GRIDS[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.encoder1(x)
        d2 = self.decoder2(self.encoder2(self.down1(e1)))
        return self.decoder1(self.up1(d2) + self.skipatt1(e1))


class SubNet3(nn.Module):
    """Full resolution: four PAGs."""

    def __init__(self, n: int, kernel_size: int, reduction: int) -> None:
        super().__init__()
        for i in range(1, 5):
            setattr(self, f"PAG{i}", PAG(n, kernel_size, reduction, _SN3_GRIDS[:_SN3_BLOCKS]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.PAG4(self.PAG3(self.PAG2(self.PAG1(x))))


class DSRIR(nn.Module):
    """DSRIR; RGB in [0, 1] with sides divisible by 8 -> ``([img3, img2, img1], [var3, var2, var1])``.

    ``img3`` is the final restoration; ``var*`` are the per-stage uncertainty (log-scale) maps.

    >>> imgs, vars = DSRIR(sn1_feats=8, sn2_feats=8, sn3_feats=8, feats_step1=4, feats_step2=4, reduction=4)(
    ...     torch.rand(1, 3, 16, 16))
    >>> imgs[0].shape, len(vars)
    (torch.Size([1, 3, 16, 16]), 3)
    """

    def __init__(
        self,
        *,
        in_c: int = 3,
        out_c: int = 3,
        sn1_feats: int = 32,
        sn2_feats: int = 48,
        sn3_feats: int = 64,
        feats_step1: int = 32,
        feats_step2: int = 16,
        kernel_size: int = 3,
        reduction: int = 8,
    ) -> None:
        super().__init__()
        self.splits = (sn1_feats, sn2_feats, sn3_feats)
        # In the authors' checkpoint, but their forward never uses them: the last USAU returns no features.
        self.unused_parameters = ("usau_3.conv2.weight", "usau_3.att_map.0.weight", "usau_3.att_map.0.bias")
        k, r = kernel_size, reduction
        self.ebd = _conv(in_c, sum(self.splits), k)
        self.SN1 = SubNet1(sn1_feats, feats_step1, k, r)
        self.PRU1 = PRU(sn1_feats, r)
        self.usau_1 = USAU(in_c, sn1_feats, out_c)
        self.channel_comp1 = _conv(sn1_feats + sn2_feats, sn2_feats, 1)
        self.SN2 = SubNet2(sn2_feats, feats_step2, k, r)
        self.PRU2 = PRU(sn2_feats, r)
        self.usau_2 = USAU(in_c, sn2_feats, out_c)
        self.channel_comp2 = _conv(sn2_feats + sn3_feats, sn3_feats, 1)
        self.SN3 = SubNet3(sn3_feats, k, r)
        self.PRU3 = PRU(sn3_feats, r)
        self.usau_3 = USAU(in_c, sn3_feats, out_c)

    def forward(self, img: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        x1, x2, x3 = torch.split(self.ebd(img), list(self.splits), dim=1)
        x, img1, var1 = self.usau_1(self.PRU1(self.SN1(x1)), img)
        assert x is not None
        x, img2, var2 = self.usau_2(self.PRU2(self.SN2(self.channel_comp1(torch.cat([x, x2], 1)))), img)
        assert x is not None
        _, img3, var3 = self.usau_3(self.PRU3(self.SN3(self.channel_comp2(torch.cat([x, x3], 1)))), img, last=True)
        return [img3, img2, img1], [var3, var2, var1]


def _build(**config: Any) -> DSRIR:
    return DSRIR(**config)


# Peak activation bytes per input pixel, fp32, CPU inference, measured with
# `python tests/benchmarks/footprint.py dsrir.all_in_one --size 256` (4,279; 2,961 at --size 512).
_FOOTPRINT = 4_280.0

SPEC = register_arch(
    ArchSpec(
        name="dsrir",
        # channels_last on the CPU: 0.88 at 128 px, 0.94 at 256 px of contiguous time, same results
        # (python tests/benchmarks/bench_policy.py --size 256 --repeats 4 --no-compile; docs/performance.md).
        policy=ArchPolicy(cpu=InferencePolicy(memory_format="channels_last")),
        build=_build,
        default_config={
            "in_c": 3,
            "out_c": 3,
            "sn1_feats": 32,
            "sn2_feats": 48,
            "sn3_feats": 64,
            "feats_step1": 32,
            "feats_step2": 16,
            "kernel_size": 3,
            "reduction": 8,
        },
        tiny_config={
            "sn1_feats": 8,
            "sn2_feats": 8,
            "sn3_feats": 8,
            "feats_step1": 4,
            "feats_step2": 4,
            "reduction": 4,
        },
        paper="Wang et al., DSRIR: Dynamic spatial refinement learning for progressive all-in-one image "
        "restoration, Information Processing & Management, 2025",
        # SubNet3's 1x1-grid patch attention pools the whole image: global receptive field, tiles are blended.
        receptive_field=None,
        footprint=_FOOTPRINT,
        select_output=lambda out: out[0][0],
        filter_checkpoint=None,  # the authors' keys are ours; read_checkpoint unwraps state_dict and module.
        size_multiple=SIZE_MULTIPLE,
    )
)

_PAPER = (
    "Wang et al. DSRIR: Dynamic spatial refinement learning for progressive all-in-one image restoration. "
    "Information Processing & Management, 2025"
)

# The weights restorekit trained and ships inside the package (restorekit/weights/, fp16 safetensors): one
# all-in-one file that every DSRIR record runs. The authors publish theirs only behind a password, so no
# upstream source is registered.
_STEPS = 3_200
_BUNDLED = BundledSource(
    "dsrir_all_in_one.safetensors",
    sha256="33076b1d3baa787af2660774130e871c41fa08f2a01b619b6ff5b3d2162b8cc5",
    size=7_064_922,
)
_SHIPPED = dict(  # what the four records share: the one network and its training
    config=dict(SPEC.default_config),
    params=3_516_837,
    license="MIT (restorekit)",
    origin=(
        "restorekit-train fit --preset dsrir.all_in_one on BSD200 + T91 (291 colour images, no test image) with "
        "seeded Gaussian noise (sigma 0-55), synthetic rain streaks and synthetic haze; uncertainty + PSNR "
        "losses (no VGG term), 64-px patches, batch 8, AdamW 5e-4 (weight decay 1e-4) with 200 warm-up steps "
        f"and cosine decay to 1e-6, {_STEPS:,} steps on 2 CPU cores in bf16 autocast, EMA 0.999; exported as fp16"
    ),
    paper=_PAPER,
)


def _notes(name: str, single_task: str = "") -> str:
    """The notes every DSRIR record shares, naming the record; ``single_task``: the paper's single-task figures."""
    tag = name.partition(".")[2]
    single = f" The paper's separately trained {tag} model reports {single_task}." if single_task else ""
    return (
        "restorekit's own all-in-one weights, bundled in the package (all four DSRIR records run the same file). "
        f"Trained for {_STEPS:,} steps, far fewer than the paper's 300k: the paper's figures are shown as reported, "
        "not reached. Rain is learnt from restorekit's synthetic streaks only: on the three Rain100L test pairs the "
        "result scores below the rainy input (it darkens them, as it would a hazy image). The authors' own "
        "model_best.pth (behind a password) converts with `restorekit convert model_best.pth out.safetensors "
        f"--model {name}`; pass weights=out.safetensors.{single}"
    )


# Measured by `python tests/benchmarks/eval_dsrir.py` (each row is the `restorekit eval` command it prints) on the
# shipped file, through the Restorer (16 px mirrored border), fp32, seed 0; docs/mprnet_dsrir.md has the degraded
# inputs' figures beside them. Each task's record carries its rows; the all-in-one record carries them all.
_MEASURED_NOISE = psnr_ssim(
    "full_image",
    ("CBSD68 sigma 15", 32.05, 0.8926),
    ("CBSD68 sigma 25", 29.38, 0.8274),
    ("CBSD68 sigma 50", 25.31, 0.6821),
    source="measured",
)
_MEASURED_HAZE = psnr_ssim("full_image", ("CBSD68 synthetic haze, first 24 images", 19.25, 0.8834), source="measured")
_MEASURED_RAIN = psnr_ssim(
    "y_full",
    ("CBSD68 synthetic rain, first 24 images", 33.08, 0.9519),
    ("Rain100L (3 test pairs)", 20.95, 0.6926),
    source="measured",
)
# Reported by the authors for their all-in-one model (paper Tables 4-7, the repository's assets/*/table.png): the
# figures to compare restorekit's all-in-one weights with. RGB; deraining on Y.
_PAPER_NOISE = psnr_ssim(
    "full_image",
    ("BSD68 sigma15 (paper, all-in-one)", 33.95, 0.9334),
    ("BSD68 sigma25 (paper, all-in-one)", 31.27, 0.8890),
    ("BSD68 sigma50 (paper, all-in-one)", 27.98, 0.7970),
)
_PAPER_RAIN = psnr_ssim("y_full", ("Rain100L (paper, all-in-one)", 40.61, 0.9895))
_PAPER_HAZE = psnr_ssim("full_image", ("SOTS outdoor (paper, all-in-one)", 32.55, 0.9826))

register_weights(
    WeightRecord.named(
        "dsrir.all_in_one",
        task="all_in_one",
        description="DSRIR all-in-one restoration: Gaussian noise, rain streaks and haze with one network",
        metrics=(*_MEASURED_NOISE, *_MEASURED_HAZE, *_MEASURED_RAIN, *_PAPER_NOISE, *_PAPER_RAIN, *_PAPER_HAZE),
        default=True,
        notes=_notes("dsrir.all_in_one"),
        bundled=_BUNDLED,
        **_SHIPPED,
    ),
    WeightRecord.named(
        "dsrir.denoise",
        task="denoise",
        description="DSRIR Gaussian denoising (the all-in-one weights)",
        metrics=(*_MEASURED_NOISE, *_PAPER_NOISE),
        notes=_notes("dsrir.denoise", "BSD68 sigma 15/25/50 34.21/31.55/28.29, Urban100 34.59/32.25/29.00"),
        bundled=_BUNDLED,
        **_SHIPPED,
    ),
    WeightRecord.named(
        "dsrir.derain",
        task="derain",
        description="DSRIR deraining (the all-in-one weights)",
        metrics=(*_MEASURED_RAIN, *_PAPER_RAIN),
        notes=_notes("dsrir.derain", "Rain100L 40.70/0.9900 (Y)"),
        bundled=_BUNDLED,
        **_SHIPPED,
    ),
    WeightRecord.named(
        "dsrir.dehaze",
        task="dehaze",
        description="DSRIR dehazing (the all-in-one weights)",
        metrics=(*_MEASURED_HAZE, *_PAPER_HAZE),
        notes=_notes("dsrir.dehaze", "SOTS outdoor 33.30/0.9847"),
        bundled=_BUNDLED,
        **_SHIPPED,
    ),
)
