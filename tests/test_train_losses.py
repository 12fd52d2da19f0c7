"""Training losses against hand computations."""

import math

import numpy as np
import pytest
import torch

from restorekit.losses import (
    LOSSES,
    CharbonnierEdgeLoss,
    ContrastiveLoss,
    DSRIRLoss,
    EdgeLoss,
    EuclideanLoss,
    L1Loss,
    VGG19Features,
    build_loss,
    charbonnier,
    psnr_loss,
    uncertainty_loss,
)


def test_l1_and_euclidean_by_hand():
    pred = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 1, 2, 2)
    gt = torch.tensor([0.0, 0.0, 5.0, 4.0]).view(1, 1, 2, 2)
    assert float(L1Loss()(pred, gt)) == pytest.approx((1 + 2 + 2 + 0) / 4)
    two = torch.cat([pred, pred]), torch.cat([gt, gt])
    assert float(EuclideanLoss()(*two)) == pytest.approx(0.5 * 2 * (1 + 4 + 4) / 2)  # 0.5 * sum / batch


def test_charbonnier_by_hand():
    pred, gt = torch.tensor([[[[3.0, 0.0]]]]), torch.zeros(1, 1, 1, 2)
    assert float(charbonnier(pred, gt)) == pytest.approx((math.sqrt(9 + 1e-6) + 1e-3) / 2)


def _laplacian_numpy(x: np.ndarray) -> np.ndarray:
    k1 = np.array([0.05, 0.25, 0.4, 0.25, 0.05])
    k = np.outer(k1, k1)

    def gauss(img):
        p = np.pad(img, 2, mode="edge")
        out = np.zeros_like(img)
        for i in range(img.shape[0]):
            for j in range(img.shape[1]):
                out[i, j] = (p[i : i + 5, j : j + 5] * k).sum()
        return out

    f = gauss(x)
    up = np.zeros_like(f)
    up[::2, ::2] = f[::2, ::2] * 4
    return x - gauss(up)


def test_edge_loss_matches_a_numpy_laplacian():
    torch.manual_seed(0)
    a, b = torch.rand(1, 1, 7, 6, dtype=torch.float64), torch.rand(1, 1, 7, 6, dtype=torch.float64)
    la, lb = _laplacian_numpy(a[0, 0].numpy()), _laplacian_numpy(b[0, 0].numpy())
    assert np.allclose(EdgeLoss().laplacian(a)[0, 0].numpy(), la)
    want = np.mean(np.sqrt((la - lb) ** 2 + 1e-6))
    assert float(EdgeLoss()(a, b)) == pytest.approx(want)


def test_charbonnier_edge_sums_every_stage():
    torch.manual_seed(1)
    gt = torch.rand(2, 3, 8, 8)
    stages = [torch.rand(2, 3, 8, 8) for _ in range(3)]
    edge = EdgeLoss()
    want = sum(float(charbonnier(s, gt)) for s in stages) + 0.05 * sum(float(edge(s, gt)) for s in stages)
    assert float(CharbonnierEdgeLoss()(stages, gt)) == pytest.approx(want, rel=1e-6)
    clamped = CharbonnierEdgeLoss(edge_weight=0, clamp=True)([s * 3 for s in stages], gt)
    assert float(clamped) == pytest.approx(sum(float(charbonnier((s * 3).clamp(0, 1), gt)) for s in stages))


def test_uncertainty_and_psnr_losses_by_hand():
    gt = torch.zeros(1, 1, 2, 2)
    out = torch.full((1, 1, 2, 2), 0.5)
    s0, s1 = torch.zeros(1, 1, 2, 2), torch.full((1, 1, 2, 2), 1.0)
    # stage 1: L1 = 0.5, s = 0; stage 2: L1 = 0.5 e^-1, + 2 * 1; averaged
    want = (0.5 + (0.5 * math.exp(-1) + 2.0)) / 2
    assert float(uncertainty_loss([out, out], [s0, s1], gt)) == pytest.approx(want)
    assert float(psnr_loss(out, gt)) == pytest.approx(10 / math.log(10) * math.log(0.25 + 1e-8))
    total = DSRIRLoss()(([out, out, out], [s0, s0, s0]), gt)
    psnr = 10 / math.log(10) * math.log(0.25 + 1e-8)
    assert float(total) == pytest.approx(0.5 + psnr * (1 + 0.25 + 0.25))


def test_vgg19_contrastive_term_with_a_saved_random_state_dict(tmp_path):
    torch.manual_seed(0)
    net = VGG19Features()
    assert sum(1 for k in net.state_dict() if k.endswith(".weight")) == 13  # relu5_1 is after the 13th conv
    path = tmp_path / "vgg19.pth"
    state = {**net.state_dict(), "classifier.0.weight": torch.zeros(2, 2)}  # a full VGG19 file has more keys
    torch.save(state, path)
    loaded = VGG19Features.from_file(str(path))
    x = torch.rand(1, 3, 32, 32)
    feats = loaded(x)
    assert [f.shape[1] for f in feats] == [64, 128, 256, 512, 512]
    assert all(torch.equal(a, b) for a, b in zip(feats, net(x)))
    gt, inp = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    stages = [torch.rand(1, 3, 32, 32) for _ in range(3)]
    fa, fg, f2, f1, fn = (net(t) for t in (stages[0], gt, stages[1], stages[2], inp))
    l1 = torch.nn.functional.l1_loss
    want = sum(
        w * (l1(fa[i], fg[i]) + 0.25 * l1(fa[i], f2[i]) + 0.125 * l1(fa[i], f1[i])) / (l1(fa[i], fn[i]) + 1e-7)
        for i, w in enumerate((1 / 32, 1 / 16, 1 / 8, 1 / 4, 1))
    )
    assert float(ContrastiveLoss(loaded)(stages, gt, inp)) == pytest.approx(float(want), rel=1e-5)
    with_vgg = DSRIRLoss(vgg_weights=str(path))
    logv = [torch.zeros(1, 3, 32, 32)] * 3
    base = DSRIRLoss()((stages, logv), gt)
    assert float(with_vgg((stages, logv), gt, inputs=inp)) == pytest.approx(float(base + 0.2 * want), rel=1e-5)


def test_vgg_file_that_is_not_vgg_is_a_clear_error(tmp_path):
    from restorekit.errors import InputError

    torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / "x.pth")
    with pytest.raises(InputError, match="not a VGG19"):
        VGG19Features.from_file(str(tmp_path / "x.pth"))


def test_every_named_loss_builds():
    for name in LOSSES:
        assert isinstance(build_loss(name), torch.nn.Module)
    with pytest.raises(ValueError, match="unknown loss"):
        build_loss("nope")
