"""Misuse of the Python API, weight files of every wrong kind, many outputs at once, and tiny images.

Tiny images: a flat colour of every size from 1x1 to 33x33 on every architecture. What "right" means
depends on the weights:

- random-init networks have no right colour, but the Restorer promises what it computes: the network on the
  image with 16 px of mirrored surroundings (of a flat image: a larger flat image), cropped. That is checked
  against a larger flat image run through the bare network; and where the network is translation-invariant,
  the result must also be the colour a flat region gets in the interior of a large image, at every size;
- the bundled spatial RNN was trained to denoise, so a flat colour must come back as that colour.
"""

from __future__ import annotations

import dataclasses
import io
import os
import pickle
import zipfile

import numpy as np
import pytest
import torch

from restorekit import load_model, registry
from restorekit.errors import (
    ConversionError,
    DeviceError,
    InputError,
    RestorekitError,
    UnknownModelError,
    WeightsError,
)
from restorekit.registry import get_arch, get_record, list_archs
from restorekit.restorer import Restorer
from restorekit.weights import save_weights

from .deadline import finishes

# ------------------------------------------------------------------ names, tasks, scales, tiles, devices, dtypes


@pytest.mark.parametrize(
    "args, kwargs, error, words",
    [
        (("msrnn.sr_x4",), {}, UnknownModelError, "Did you mean 'msrn.sr_x4'"),
        (("msrn.sr_x5",), {}, UnknownModelError, "Unknown tag 'sr_x5' for architecture 'msrn'; its models are"),
        (("nonet",), {}, UnknownModelError, "Run `restorekit list`"),
        (("msrn",), {"task": "denoise"}, UnknownModelError, "has no model with task='denoise'"),
        (("msrn",), {"scale": 5}, UnknownModelError, "has no model with task=None, scale=5"),
        (("msrn.sr_x2",), {"scale": 4}, UnknownModelError, "has scale 2, not 4"),
        (("spatial_rnn",), {"tile": -8}, InputError, "tile must be 'auto', None/0"),
        (("spatial_rnn",), {"tile": "big"}, InputError, "tile must be 'auto'"),
        (("spatial_rnn",), {"tile": True}, InputError, "not True"),
        (("spatial_rnn",), {"tile": 2.5}, InputError, "not 2.5"),
        (("spatial_rnn",), {"dtype": "int8"}, InputError, "Unknown dtype 'int8'"),
        (("spatial_rnn",), {"dtype": "float16"}, InputError, "validated only for float32, not float16"),
        (("spatial_rnn",), {"weights": "x.pt", "pretrained": False}, ValueError, "contradict each other"),
    ],
    ids=lambda v: str(v)[:40],
)
def test_misnamed_and_contradictory_arguments(args, kwargs, error, words):
    with pytest.raises(error) as info:
        Restorer(*args, device="cpu", **kwargs)
    assert words in str(info.value), str(info.value)


@pytest.mark.parametrize(
    "device, words",
    [
        ("cuda", "device 'cuda' is not available (no CUDA GPU or driver found by torch); devices on this machine: cpu"),
        ("cuda:7", "devices on this machine: cpu"),
        ("mps", "device 'mps' is not available"),
        ("tpu", "device 'tpu' is not a device name"),
        ("", "is not a device name"),
        ("meta", "holds no data"),
        (3.5, "is a float, not a device name"),
    ],
)
def test_devices_that_are_not_here_name_the_ones_that_are(device, words):
    if torch.cuda.is_available() or (torch.backends.mps.is_available() and device == "mps"):
        pytest.skip("this machine has the device")
    with pytest.raises(DeviceError) as info:
        Restorer("spatial_rnn", device=device)
    assert words in str(info.value) and "device='auto'" in str(info.value)
    with pytest.raises(DeviceError):
        load_model("spatial_rnn", device=device)


def test_auto_picks_a_device_that_exists():
    assert Restorer("spatial_rnn", device="auto").device.type in ("cuda", "mps", "cpu")


# ------------------------------------------------------------------ masks


@pytest.fixture(scope="module")
def inpainter(tiny_record):
    rec = tiny_record("spatial_rnn.inpaint", "_corpus")
    with registry.temporary(None, rec):
        torch.manual_seed(0)
        yield Restorer(rec.name, pretrained=False, device="cpu")


@pytest.mark.parametrize(
    "mask, words",
    [
        (None, "needs mask=: an image the size of the input"),
        (np.ones((5, 5), np.uint8), "the mask is (5, 5) but the image is (8, 8); give them one size"),
        (torch.ones(2, 8, 8), "a tensor mask must be HW, 1HW or N1HW"),
        (torch.full((8, 8), float("nan")), "the mask has 64 NaN or infinite values"),
        (torch.full((8, 8), 255.0), "the mask holds float values 255..255"),
        ([np.ones((8, 8), np.uint8)] * 2, "got 1 inputs but 2 masks"),
        ({"mask": 1}, "cannot use a dict as a mask"),
    ],
    ids=["missing", "wrong size", "two channels", "nan", "0..255 float", "count", "dict"],
)
def test_bad_masks_are_refused(inpainter, mask, words):
    img = np.zeros((8, 8, 3), np.uint8)
    x = [img] if isinstance(mask, list) else img
    with pytest.raises(InputError) as info:
        inpainter.run(x, mask=mask)
    assert words in str(info.value), str(info.value)


def test_a_mask_for_a_model_without_one_is_refused(tiny_sr):
    with pytest.raises(InputError, match="takes no mask; mask= is for inpainting"):
        tiny_sr.run(np.zeros((4, 4, 3), np.uint8), mask=np.ones((4, 4), np.uint8))


# ------------------------------------------------------------------ weight files of every wrong kind


def _tiny_state(arch: str = "spatial_rnn") -> tuple[dict, dict]:
    spec = get_arch(arch)
    config = {**spec.default_config, **spec.tiny_config}
    torch.manual_seed(0)
    return spec.build(**config).state_dict(), config


def _zip_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("readme.txt", "a zip, not a checkpoint")
    return buf.getvalue()


def _safetensors_without_header(path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(path))


@pytest.mark.parametrize(
    "name, make, error, words",
    [
        ("random.pth", lambda p: p.write_bytes(os.urandom(4096)), ConversionError, "not a checkpoint in any format"),
        ("random.bin", lambda p: p.write_bytes(b"\x13\x37" * 99), ConversionError, "not a checkpoint in any format"),
        ("empty.pth", lambda p: p.write_bytes(b""), ConversionError, "is empty (0 bytes)"),
        ("notes.pt", lambda p: p.write_text("config = 1\n"), ConversionError, "does not start like any checkpoint"),
        ("archive.pth", lambda p: p.write_bytes(_zip_bytes()), ConversionError, "not a readable PyTorch checkpoint"),
        ("random.safetensors", lambda p: p.write_bytes(os.urandom(512)), WeightsError, "not a readable safetensors"),
        ("cut.safetensors", "cut", WeightsError, "not a readable safetensors"),
        ("cut.pth", "cut_torch", ConversionError, "not a readable PyTorch checkpoint"),
        ("bare.safetensors", _safetensors_without_header, WeightsError, "do not fit the SpatialRNN network: missing"),
        ("other_arch.safetensors", "msrn", WeightsError, "holds weights for architecture 'msrn'"),
        ("a_list.pth", lambda p: torch.save([torch.zeros(1)], p), ConversionError, "holds a list, not a state dict"),
        ("wrong_keys.pth", lambda p: torch.save({"x": torch.zeros(1)}, p), WeightsError, "missing keys"),
        ("folder", lambda p: p.mkdir(), WeightsError, "is a folder, not a file"),
        ("pipe.pth", lambda p: os.mkfifo(p), WeightsError, "is not a regular file (a named pipe"),
        ("absent.pth", lambda p: None, WeightsError, "does not exist"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_weight_files_of_every_wrong_kind(tmp_path, name, make, error, words):
    path = tmp_path / name
    if make == "cut":
        state, config = _tiny_state()
        save_weights(path, state, arch="spatial_rnn", config=config)
        path.write_bytes(path.read_bytes()[:-100])
    elif make == "cut_torch":
        torch.save(_tiny_state()[0], path)
        path.write_bytes(path.read_bytes()[:-200])
    elif make == "msrn":
        state, config = _tiny_state("msrn")
        save_weights(path, state, arch="msrn", config=config)
    else:
        make(path)
    with pytest.raises(error) as info:
        finishes(lambda: Restorer("spatial_rnn.denoise", weights=path, device="cpu"), seconds=10)
    message = str(info.value)
    assert words in message and str(path) in message, message
    assert "refused for safety" not in message, "only a pickle that asks for code is refused for safety"


class _Payload:
    """Unpickling it opens (so creates) the file named by ``marker``: harmless, and visible afterwards."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("container", ["zip", "legacy"])
def test_a_malicious_pickle_is_refused_and_its_payload_never_runs(tmp_path, container):
    marker = tmp_path / "payload_ran"
    path = tmp_path / "model.pth"
    if container == "zip":  # what torch.save writes: a state dict with one poisoned entry
        torch.save({"conv0.weight": torch.zeros(3), "extra": _Payload(str(marker))}, path)
    else:  # a bare pickle, as older training scripts wrote with pickle.dump
        path.write_bytes(pickle.dumps({"extra": _Payload(str(marker))}, protocol=2))
    # The control: an unsafe loader (torch.load(weights_only=False), plain pickle) runs the payload.
    if container == "zip":
        torch.load(path, weights_only=False)["extra"].close()
    else:
        pickle.loads(path.read_bytes())["extra"].close()
    assert marker.exists(), "the control must show the payload is live"
    marker.unlink()
    for call in (
        lambda: Restorer("spatial_rnn.denoise", weights=path, device="cpu"),
        lambda: load_model("spatial_rnn.denoise", weights=path),
    ):
        with pytest.raises(ConversionError, match=r"refused for safety.*GLOBAL io\.open"):
            call()
    assert not marker.exists(), "restorekit never ran the payload"


# ------------------------------------------------------------------ many inputs into one folder


def test_two_inputs_with_one_name_are_refused_before_any_work(tmp_path, tiny_sr):
    from PIL import Image

    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        Image.fromarray(np.full((4, 4, 3), 9, np.uint8)).save(tmp_path / sub / "x.png")
    out = tmp_path / "out"
    with pytest.raises(InputError, match=r"b/x\.png: output .*out/x\.png is also the output of .*a/x\.png; rename"):
        tiny_sr.run([tmp_path / "a" / "x.png", tmp_path / "b" / "x.png"], output=out)
    assert not out.exists(), "nothing written"


def test_an_output_that_is_an_input_is_refused_before_any_work(tmp_path, tiny_sr):
    from PIL import Image

    src = tmp_path / "x.png"
    Image.fromarray(np.full((4, 4, 3), 9, np.uint8)).save(src)
    before = src.read_bytes()
    with pytest.raises(InputError, match="would overwrite an input"):
        tiny_sr.run([src], output=tmp_path)
    assert src.read_bytes() == before


def test_distinct_names_all_arrive(tmp_path, tiny_sr):
    arrays = [np.full((4, 4, 3), v, np.uint8) for v in (10, 200)]
    tiny_sr.run(arrays, output=tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["0000.png", "0001.png"]


# ------------------------------------------------------------------ tiny images, every architecture


def _default_tiny(arch: str, tiny_record) -> registry.WeightRecord:
    rec = get_record(arch)
    if rec.arch == "spatial_rnn":
        rec = get_record("spatial_rnn.denoise")  # the masked tags need a mask; their default is denoising
    return tiny_record(rec.name, "_flat")


# MPRNet cuts its input into halves and quarters (stage 1 and 2) that are restored apart, so a flat image does
# not give a flat result near the seams: for it only the contract (the larger padded computation) is checked.
_TRANSLATION_INVARIANT = {"dsrir", "memnet", "msrn", "spatial_rnn"}


@pytest.fixture
def one_thread():
    # Hundreds of small forwards: on a busy 2-core machine multi-threaded small ops mostly wait for each other.
    from ..shared_data import one_thread as single

    with single():
        yield


@pytest.mark.parametrize("arch", list_archs())
def test_flat_images_of_every_size_on_every_architecture(arch, one_thread, tiny_record):
    rec = _default_tiny(arch, tiny_record)
    spec = get_arch(rec.arch)
    with registry.temporary(None, rec):
        torch.manual_seed(0)
        r = Restorer(rec.name, pretrained=False, device="cpu", tile=None)
    model, s, m, c = r.model, rec.net_scale, rec.size_multiple, r.context
    assert c == 16 or c == spec.receptive_field_for(rec.config)
    colour = torch.tensor([200, 100, 50][: rec.in_channels]).float() / 255

    def bare(size: int) -> torch.Tensor:  # the network alone on a flat image of ``size`` (padded to the multiple)
        side = size + (-size) % m
        x = colour.view(1, -1, 1, 1).expand(1, -1, side, side) * spec.value_range
        with torch.inference_mode():
            y = model(x)
        return (spec.select_output(y) if spec.select_output else y) / spec.value_range

    invariant = rec.arch in _TRANSLATION_INVARIANT
    interior = bare(96)[..., 48 * s : 49 * s, 48 * s : 49 * s]  # one output block far from every edge
    for n in range(1, 34):
        out = r.run(colour.view(-1, 1, 1).expand(-1, n, n).contiguous())
        if not invariant or n in (1, 2, 7, 33):  # the invariant ones are pinned by the interior colour below
            larger = bare(n + 2 * c)[0, :, c * s : (c + n) * s, c * s : (c + n) * s].clamp(0, 1)
            assert torch.allclose(out, larger, atol=1e-5), f"{arch} {n}x{n}: not the larger padded computation"
        if invariant:
            flat = interior[0].clamp(0, 1).repeat(1, n, n)
            err = float((out - flat).abs().max()) * 255
            assert err < 0.05, f"{arch} {n}x{n}: {err:.2f} levels from the colour of a flat interior"


@pytest.mark.parametrize("colour", [(200, 100, 50), (60, 180, 90), (128, 128, 128), (20, 240, 128), (0, 0, 255)])
def test_the_bundled_denoiser_returns_a_flat_colour_at_every_size(denoiser, colour, one_thread):
    # The trained network's own colour accuracy, in the middle of a large flat image, is 1 level for some colours
    # and up to 7 for others (4 for (60, 180, 90); 6-7 at the corners of the gamut, which its sigmoid output
    # approaches slowly). The size of the image must not add to it: before restorekit gave every image mirrored
    # surroundings, a 1x1 (200, 100, 50) came back (128, 130, 119) and the corners of any flat image 33 levels off.
    big = np.empty((128, 128, 3), np.uint8)
    big[:] = colour
    interior = denoiser.run(big)[64, 64].astype(int)
    own = int(np.abs(interior - colour).max())
    assert own <= (1 if colour in ((200, 100, 50), (128, 128, 128)) else 7), f"{colour}: interior off by {own}"
    sizes = [(n, n) for n in range(1, 34)] + [(1, 200), (200, 1), (2, 33), (33, 2)]
    for h, w in sizes:
        img = np.empty((h, w, 3), np.uint8)
        img[:] = colour
        out = denoiser.run(img).astype(int)
        assert int(np.abs(out - interior).max()) <= 1, f"{h}x{w} {colour}: {out.max()} vs interior {interior}"


def test_restorekit_errors_share_one_base_and_say_what_to_do():
    for cls in (ConversionError, DeviceError, InputError, UnknownModelError, WeightsError):
        assert issubclass(cls, RestorekitError)
    assert dataclasses.is_dataclass(get_record("spatial_rnn"))
