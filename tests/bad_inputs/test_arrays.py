"""Arrays and tensors of every dtype, range, shape, layout and device: refused clearly, or restored right.

"Right" is checked against the same image in the canonical form (a contiguous uint8 or [0, 1] float array),
so a layout or dtype that is accepted must give exactly that image's result.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from restorekit.errors import InputError

RNG = np.random.default_rng(7)
IMG8 = RNG.integers(0, 256, (10, 12, 3), dtype=np.uint8)
IMGF = IMG8.astype(np.float32) / 255


@pytest.fixture(scope="module")
def reference(tiny_sr):
    return tiny_sr.run(IMGF)


# ------------------------------------------------------------------ numpy dtypes


@pytest.mark.parametrize(
    "dtype", ["int8", "int16", "int32", "int64", "uint32", "uint64", "complex64", "object", "datetime64[s]", "U1"]
)
def test_unsupported_array_dtypes_are_refused_with_the_accepted_ones(tiny_sr, dtype):
    arr = np.zeros((4, 4, 3), dtype=dtype)
    with pytest.raises(InputError) as info:
        tiny_sr.run(arr)
    assert f"dtype {arr.dtype} is not supported" in str(info.value) and "uint8 (0-255)" in str(info.value)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_float_arrays_in_0_1_of_every_width_give_the_same_result(tiny_sr, reference, dtype):
    out = tiny_sr.run(IMGF.astype(dtype))
    assert out.dtype == np.float32 and np.abs(out - reference).max() < (2e-3 if dtype == "float16" else 1e-6)


def test_uint16_and_bool_arrays_are_read_in_their_range(tiny_sr, reference):
    out16 = tiny_sr.run(IMG8.astype(np.uint16) * 257)
    assert out16.dtype == np.uint16 and np.abs(out16 / 65535 - reference).max() < 1e-4
    mask_like = tiny_sr.run(IMG8 > 127)
    assert mask_like.dtype == np.uint8 and mask_like.shape == (20, 24, 3)


@pytest.mark.parametrize(
    "values, words",
    [
        (IMG8.astype(np.float32), "It looks like 0..255 data: pass input_range=(0, 255)"),
        (IMGF * 2 - 1, "It looks like -1..1 data: pass input_range=(-1, 1)"),
        (IMGF * 1000, "Pass input_range=(lo, hi)"),
        (IMGF + 0.01, "float pixels must lie in [0, 1]"),
    ],
    ids=["0..255", "-1..1", "0..1000", "just-over-1"],
)
def test_floats_outside_0_1_are_refused_with_the_range_expected(tiny_sr, values, words):
    with pytest.raises(InputError) as info:
        tiny_sr.run(values)
    assert words in str(info.value) and "float pixels must lie in [0, 1]" in str(info.value)


def test_floats_within_rounding_of_0_1_are_accepted(tiny_sr, reference):
    nudged = IMGF.copy()
    nudged[0, 0] = [1 + 1e-4, -1e-4, 0.5]
    assert tiny_sr.run(nudged).shape == reference.shape


@pytest.mark.parametrize("lo, hi", [(0, 255), (-1, 1)])
def test_input_range_reads_other_float_ranges_and_answers_in_them(tiny_sr, reference, lo, hi):
    out = tiny_sr.run(IMGF * (hi - lo) + lo, input_range=(lo, hi))
    assert np.allclose((out - lo) / (hi - lo), reference, atol=1e-5)
    with pytest.raises(InputError, match=r"outside the input_range 0\.\.255 that was given"):
        tiny_sr.run(IMGF * 300, input_range=(0, 255))


@pytest.mark.parametrize("bad", [(255, 0), (0,), "0:255", (0, float("inf"))])
def test_a_malformed_input_range_is_refused(tiny_sr, bad):
    with pytest.raises(InputError, match="input_range must be"):
        tiny_sr.run(IMGF, input_range=bad)


def test_input_range_on_an_integer_image_is_refused(tiny_sr):
    with pytest.raises(InputError, match="input_range= applies to float images, but this one is 8-bit"):
        tiny_sr.run(IMG8, input_range=(0, 255))


@pytest.mark.parametrize("bad, count", [(np.nan, 1), (np.inf, 1), (-np.inf, 1)])
def test_nan_and_inf_are_counted_and_refused(tiny_sr, bad, count):
    arr = IMGF.copy()
    arr[3, 4, 1] = bad
    with pytest.raises(InputError, match=f"has {count} NaN or infinite values"):
        tiny_sr.run(arr)


@pytest.mark.parametrize(
    "shape, words",
    [((0, 0, 3), "is empty"), ((5, 0), "is empty"), ((4, 4, 5), "is not an image"), ((16,), "is not an image")],
)
def test_empty_and_wrongly_shaped_arrays_are_refused(tiny_sr, shape, words):
    with pytest.raises(InputError, match=words):
        tiny_sr.run(np.zeros(shape, np.uint8))


@pytest.mark.parametrize(
    "layout",
    ["transposed view", "negative strides", "fortran order", "big-endian"],
)
def test_unusual_memory_layouts_give_the_contiguous_result(tiny_sr, layout):
    flipped = np.ascontiguousarray(IMG8[::-1, ::-1])
    if layout == "transposed view":
        arr, want = np.ascontiguousarray(IMG8.transpose(1, 0, 2)).transpose(1, 0, 2), IMG8
    elif layout == "negative strides":
        arr, want = IMG8[::-1, ::-1], flipped
    elif layout == "fortran order":
        arr, want = np.asfortranarray(IMG8), IMG8
    else:
        arr, want = (IMG8.astype(np.uint16) * 257).astype(">u2"), IMG8.astype(np.uint16) * 257
    assert np.array_equal(tiny_sr.run(arr), tiny_sr.run(want))


# ------------------------------------------------------------------ tensors


def test_tensor_dtypes_come_back_as_they_came(tiny_sr, reference):
    x = torch.from_numpy(IMGF).permute(2, 0, 1)
    for dtype, tol in ((torch.float32, 1e-6), (torch.float64, 1e-6), (torch.float16, 2e-3), (torch.bfloat16, 1e-2)):
        out = tiny_sr.run(x.to(dtype))
        assert out.dtype == dtype and out.shape == (3, 20, 24)
        assert float((out.float().permute(1, 2, 0) - torch.from_numpy(reference)).abs().max()) < tol, dtype


@pytest.mark.parametrize(
    "tensor, words",
    [
        (torch.zeros(3, 8, 8, dtype=torch.uint8), "tensor inputs must be float in [0, 1], got torch.uint8"),
        (torch.zeros(3, 8, 8, dtype=torch.complex64), "must be float"),
        (torch.zeros(8, 8, 3), "CHW or NCHW with 1 or 3 channels, got shape (8, 8, 3); a HWC tensor needs"),
        (torch.zeros(1, 1, 3, 8, 8), "CHW or NCHW"),
        (torch.tensor(0.5), "CHW or NCHW"),
        (torch.zeros(1, 3, 0, 0), "the input tensor of shape (1, 3, 0, 0) is empty"),
        (torch.zeros(0, 3, 8, 8), "is empty"),
        (torch.zeros(1, 3, 8, 8, device="meta"), "is on the meta device"),
        (torch.zeros(3, 8, 8).to_sparse(), "must be dense, not torch.sparse_coo"),
    ],
    ids=["uint8", "complex", "HWC", "5-D", "0-D", "empty HW", "empty batch", "meta", "sparse"],
)
def test_bad_tensors_are_refused_by_restorekit_not_inside_torch(tiny_sr, tensor, words):
    with pytest.raises(InputError) as info:
        tiny_sr.run(tensor)
    assert words in str(info.value), str(info.value)


def test_tensor_nan_and_range_are_checked_like_arrays(tiny_sr):
    x = torch.rand(3, 6, 6)
    x[0, 0, 0] = float("nan")
    with pytest.raises(InputError, match="1 NaN or infinite"):
        tiny_sr.run(x)
    with pytest.raises(InputError, match="It looks like 0..255 data"):
        tiny_sr.run(torch.rand(3, 6, 6) * 255)


def test_non_contiguous_and_grad_tensors_give_the_plain_result(tiny_sr):
    x = torch.from_numpy(IMGF).permute(2, 0, 1)[None].contiguous()
    want = tiny_sr.run(x)
    assert torch.equal(tiny_sr.run(x.to(memory_format=torch.channels_last)), want)
    assert torch.equal(tiny_sr.run(x.transpose(2, 3).contiguous().transpose(2, 3)), want)
    grad = x.clone().requires_grad_()
    out = tiny_sr.run(grad)
    assert torch.equal(out, want) and not out.requires_grad


def test_a_batch_restores_each_image_as_alone(tiny_sr):
    x = torch.rand(3, 3, 7, 9, generator=torch.Generator().manual_seed(0))
    batch = tiny_sr.run(x)
    assert torch.allclose(batch[2], tiny_sr.run(x[2]), atol=1e-6)


@pytest.mark.parametrize(
    "obj, words",
    [({"image": 1}, "object of type dict"), (b"\x89PNG", "object of type bytes"), (3.5, "object of type float")],
)
def test_other_objects_are_refused_with_the_accepted_kinds(tiny_sr, obj, words):
    with pytest.raises(InputError, match=f"{words}: pass a path, a PIL image, a numpy array"):
        tiny_sr.run(obj)
