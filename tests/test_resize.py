"""MATLAB-compatible bicubic imresize: kernel, sizes, borders, both code paths, and MATLAB's own LR files."""

import math

import numpy as np
import pytest
import torch

from restorekit import resize
from restorekit.errors import InputError
from restorekit.resize import cubic, imresize, output_size, resize_weights

from . import shared_data


def _reference_1d(v: np.ndarray, out_len: int, scale: float) -> np.ndarray:
    """MATLAB's contributions + imresizemex for one vector, written plainly with loops (1-based like MATLAB)."""
    n = len(v)
    width = 4.0 / scale if scale < 1 else 4.0

    def k(t: float) -> float:
        t = abs(t * scale) if scale < 1 else abs(t)
        f = 1.5 * t**3 - 2.5 * t**2 + 1 if t <= 1 else (-0.5 * t**3 + 2.5 * t**2 - 4 * t + 2 if t <= 2 else 0.0)
        return f * scale if scale < 1 else f

    aux = list(range(1, n + 1)) + list(range(n, 0, -1))
    out = np.zeros(out_len)
    for i in range(1, out_len + 1):
        u = i / scale + 0.5 * (1 - 1 / scale)
        left = math.floor(u - width / 2)
        taps = [(left + j, k(u - (left + j))) for j in range(math.ceil(width) + 2)]
        total = sum(w for _, w in taps)
        out[i - 1] = sum(w / total * v[aux[(j - 1) % (2 * n)] - 1] for j, w in taps)
    return out


def _reference(img: np.ndarray, oh: int, ow: int, sy: float, sx: float) -> np.ndarray:
    rows = np.stack([_reference_1d(img[:, c], oh, sy) for c in range(img.shape[1])], 1)
    return np.stack([_reference_1d(rows[r], ow, sx) for r in range(oh)], 0)


def test_cubic_kernel_is_keys_a_minus_half():
    t = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 2.5, -0.5, -1.5], dtype=torch.float64)
    assert cubic(t).tolist() == [1.0, 0.5625, 0.0, -0.0625, 0.0, 0.0, 0.5625, -0.0625]


def test_output_size_is_matlab_ceil_without_float_noise():
    assert output_size(255, 1 / 3) == 85 and output_size(10, 0.25) == 3 and output_size(7, 1.5) == 11
    assert output_size(100, 0.7) == 70 and output_size(3, 1 / 3) == 1
    x = torch.rand(1, 1, 255, 10)
    assert imresize(x, 1 / 3).shape == (1, 1, 85, 4)


@pytest.mark.parametrize(
    "shape,kw",
    [
        ((13, 9), {"scale": 0.5}),
        ((13, 9), {"scale": 1 / 3}),
        ((12, 8), {"scale": 2}),
        ((7, 5), {"scale": 3}),
        ((11, 10), {"scale": 0.7}),
        ((6, 9), {"scale": 1.3}),
        ((10, 12), {"size": (4, 17)}),
        ((5, 6), {"scale": (2.0, 0.5)}),
    ],
)
def test_matches_a_plain_loop_reference(shape, kw):
    rng = np.random.default_rng(0)
    img = rng.random(shape)
    out = imresize(torch.from_numpy(img)[None, None], **kw)[0, 0].numpy()
    h, w = shape
    if "size" in kw:
        oh, ow = kw["size"]
        sy, sx = oh / h, ow / w
    else:
        s = kw["scale"]
        sy, sx = s if isinstance(s, tuple) else (s, s)
        oh, ow = output_size(h, sy), output_size(w, sx)
    assert out.shape == (oh, ow)
    np.testing.assert_allclose(out, _reference(img, oh, ow, sy, sx), atol=1e-12)


def test_weights_rows_sum_to_one_and_mirror_at_the_border():
    m = resize_weights(5, 10)
    torch.testing.assert_close(m.sum(1), torch.ones(10, dtype=torch.float64))
    # A one-pixel-wide input: every tap mirrors onto that pixel.
    assert torch.equal(resize_weights(1, 3), torch.ones(3, 1, dtype=torch.float64))
    x = torch.full((2, 3, 9, 7), 0.3)
    torch.testing.assert_close(imresize(x, 2.5), torch.full((2, 3, 23, 18), 0.3))
    torch.testing.assert_close(imresize(x, 0.4), torch.full((2, 3, 4, 3), 0.3))


def test_blocked_matmuls_equal_the_dense_matrices(monkeypatch):
    x = torch.rand(2, 3, 21, 17, dtype=torch.float64)
    for s in (0.5, 3, 0.3, 1.7):
        oh, ow = output_size(21, s), output_size(17, s)
        dense = resize_weights(21, oh, s) @ x @ resize_weights(17, ow, s).T
        torch.testing.assert_close(imresize(x, s), dense, rtol=0, atol=1e-12)  # one block: small sizes
        resize._blocks_cached.cache_clear()
        monkeypatch.setattr(resize, "_BLOCK_MIN", 0)
        monkeypatch.setattr(resize, "_BLOCK", 4)  # several blocks, each over its own input span
        assert len(resize._blocks_cached(21, oh, s, True)) == -(-oh // 4)
        torch.testing.assert_close(imresize(x, s), dense, rtol=0, atol=1e-12)
        monkeypatch.undo()
        resize._blocks_cached.cache_clear()


def test_batched_float32_and_quantize():
    x = torch.rand(4, 3, 16, 20)
    one = torch.cat([imresize(x[i : i + 1], 0.5) for i in range(4)])
    torch.testing.assert_close(imresize(x, 0.5), one)
    assert imresize(x, 0.5).dtype == torch.float32
    q = imresize(x, 0.5, quantize=True)
    assert torch.equal(q, (q * 255).round() / 255) and q.min() >= 0 and q.max() <= 1
    assert (q - imresize(x, 0.5)).abs().max() < 2 / 255
    # No antialiasing: the plain cubic kernel, sampling (as torch's bicubic with antialias=False would).
    plain = imresize(x, 0.5, antialias=False)
    assert not torch.allclose(plain, imresize(x, 0.5))


def test_errors_say_what_to_pass():
    with pytest.raises(InputError, match="floating-point"):
        imresize(torch.zeros(4, 4, dtype=torch.uint8), 2)
    with pytest.raises(InputError, match="exactly one"):
        imresize(torch.zeros(4, 4))
    with pytest.raises(InputError, match="exactly one"):
        imresize(torch.zeros(4, 4), 2, size=(8, 8))
    with pytest.raises(InputError, match="positive"):
        imresize(torch.zeros(4, 4), -2)


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["Set5", "Set14"])
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_downscale_matches_the_matlab_lr_files(dataset, scale):
    folder = shared_data.require("sr", dataset, f"x{scale}")
    diffs = {False: [], True: []}
    with shared_data.one_thread():
        _downscale_diffs(folder, scale, diffs)
    assert np.mean(diffs[False]) < 0.5, diffs
    # MATLAB rounds uint8 images to uint8 after each 1-D pass; emulating that gets much closer.
    assert np.mean(diffs[True]) < 0.05, diffs


def _downscale_diffs(folder, scale, diffs):
    for hr_path in sorted((folder / "HR").glob("*.png")):
        hr, lr = shared_data.load(hr_path), shared_data.load(folder / "LR" / hr_path.name)
        for quantize in (False, True):
            ours = imresize(hr, 1 / scale, quantize=quantize).clamp(0, 1)
            assert ours.shape == lr.shape, hr_path.name
            ours8 = torch.floor(ours * 255 + 0.5)
            diffs[quantize].append(float((ours8 - lr * 255).abs().mean()))
