"""device, dtype, allow_unpinned and progress: one check, one meaning, the same error from every entry point."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from restorekit import Restorer, load_model
from restorekit.cli import main
from restorekit.devices import pick_device
from restorekit.errors import DeviceError, InputError
from restorekit.evaluate import evaluate
from restorekit.options import RunOptions, run_options
from restorekit.registry import get_record
from restorekit.weights import save_weights

BAD = [
    ({"device": "potato"}, DeviceError, "device 'potato' is not a device name; devices on this machine: cpu"),
    ({"device": 0}, DeviceError, "is a int, not a device name"),
    ({"dtype": "int8"}, InputError, "Unknown dtype 'int8': use 'auto', 'float32', 'float16' or 'bfloat16'"),
    ({"dtype": torch.int8}, InputError, "dtype torch.int8 is not one restorekit runs models in"),
    ({"dtype": "float16"}, InputError, "msrn.sr_x2 is validated only for float32, not float16"),
    ({"allow_unpinned": "yes"}, InputError, "allow_unpinned must be True, False or None"),
    ({"progress": 1}, InputError, "progress must be True, False or None"),
]


def _entry(name, tmp_path):
    data = tmp_path / "sr"
    for sub, size in (("HR", 16), ("LR", 8)):
        (data / sub).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((size, size, 3), 90, np.uint8)).save(data / sub / "a.png")
    return {
        "Restorer": lambda **kw: Restorer("msrn.sr_x2", pretrained=False, **kw),
        "load_model": lambda **kw: load_model("msrn.sr_x2", pretrained=False, **kw),
        "evaluate": lambda **kw: evaluate("msrn.sr_x2", data, pretrained=False, **kw),
    }[name]


@pytest.mark.parametrize("entry", ["Restorer", "load_model", "evaluate"])
@pytest.mark.parametrize("kwargs, error, words", BAD, ids=lambda v: str(v)[:30])
def test_bad_values_are_the_same_error_everywhere(tmp_path, entry, kwargs, error, words):
    if torch.cuda.is_available() and "device" in kwargs:
        pytest.skip("the device list differs on a CUDA machine")
    call = _entry(entry, tmp_path)
    with pytest.raises(error) as info:
        call(**kwargs)
    assert words in str(info.value), str(info.value)


def test_baselines_check_the_options_too(tmp_path):
    with pytest.raises(DeviceError, match="not a device name"):
        evaluate("bicubic", tmp_path, scale=2, device="potato")
    with pytest.raises(InputError, match="Unknown dtype"):
        evaluate("identity", tmp_path, dtype="float64x")


def test_auto_is_one_device_everywhere(tmp_path):
    want = pick_device("auto")
    net = load_model("msrn.sr_x2", pretrained=False, device="auto")
    assert next(net.parameters()).device.type == want.type and next(net.parameters()).dtype == torch.float32
    assert Restorer("msrn.sr_x2", pretrained=False).device == want  # the default is "auto" too
    assert next(load_model("msrn.sr_x2", pretrained=False).parameters()).device.type == want.type
    path = tmp_path / "w.safetensors"
    save_weights(path, net.state_dict(), arch="msrn", config=get_record("msrn.sr_x2").config, name="msrn.sr_x2")
    from_file = load_model(path, device="auto")
    assert next(from_file.parameters()).device.type == want.type


def test_dtype_is_checked_against_the_record_and_applied(tmp_path):
    net = load_model("msrn.sr_x2", pretrained=False, device="cpu", dtype="fp32")
    assert {p.dtype for p in net.parameters()} == {torch.float32}
    # A restorekit file of a registered model: its record decides, as for the name.
    path = tmp_path / "w.safetensors"
    save_weights(path, net.state_dict(), arch="msrn", config=get_record("msrn.sr_x2").config, name="msrn.sr_x2")
    with pytest.raises(InputError, match="validated only for float32"):
        load_model(path, device="cpu", dtype=torch.float16)
    # A file of no registered model: nothing says a dtype is not validated, so it is taken as given.
    save_weights(path, net.state_dict(), arch="msrn", config=get_record("msrn.sr_x2").config, name=None)
    assert {p.dtype for p in load_model(path, device="cpu", dtype="bfloat16").parameters()} == {torch.bfloat16}


def test_options_are_frozen_and_resolve_auto_to_float32_on_the_cpu():
    opts = run_options("cpu", "auto", None, None)
    assert opts == RunOptions(torch.device("cpu"), "auto", None, None)
    assert opts.dtype_for(get_record("msrn.sr_x2")) == torch.float32
    assert run_options("cpu", progress=True).bar_disabled is False
    assert run_options("cpu", progress=False).bar_disabled is True
    assert run_options("cpu").bar_disabled is None  # tqdm: off unless stderr is a terminal
    with pytest.raises(AttributeError):
        opts.device = torch.device("meta")  # type: ignore[misc]


def test_evaluate_takes_dtype(tmp_path):
    data = tmp_path / "sr"
    for sub, size in (("HR", 16), ("LR", 8)):
        (data / sub).mkdir(parents=True)
        Image.fromarray(np.full((size, size, 3), 90, np.uint8)).save(data / sub / "a.png")
    res = evaluate("msrn.sr_x2", data, pretrained=False, device="cpu", dtype="float32", progress=False)
    assert len(res.images) == 1


@pytest.mark.parametrize(
    "argv, words",
    [
        (["eval", "msrn.sr_x2", "--data", "D", "--dtype", "float16"], "validated only for float32, not float16"),
        (["eval", "msrn.sr_x2", "--data", "D", "--dtype", "int4"], "Unknown dtype 'int4'"),
        (["eval", "msrn.sr_x2", "--data", "D", "--device", "potato"], "device 'potato' is not a device name"),
        (
            ["run", "l0smooth", "x.png", "-o", "out", "--allow-unpinned"],
            "(no network): --allow-unpinned does not apply",
        ),
        (["run", "l0smooth", "x.png", "-o", "out", "--dtype", "float16"], "(no network): --dtype does not apply"),
    ],
)
def test_cli_flags_mirror_the_keywords(tmp_path, capsys, argv, words):
    argv = [str(tmp_path / a) if a in ("D", "x.png", "out") else a for a in argv]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("restorekit: error: ") and words in err, err


def test_cli_progress_flags_parse_both_ways():
    from restorekit.cli import build_parser

    parser = build_parser()
    for verb in (["run", "m", "x", "-o", "o"], ["eval", "m", "--data", "d"], ["download", "m"]):
        assert parser.parse_args(verb).progress is None and parser.parse_args(verb).allow_unpinned is None
        assert parser.parse_args([*verb, "--no-progress"]).progress is False  # the old flag still works
        assert parser.parse_args([*verb, "--progress", "--allow-unpinned"]).progress is True
        assert parser.parse_args([*verb, "--allow-unpinned"]).allow_unpinned is True


def test_load_model_says_the_value_range_of_every_architecture():
    # The bare network skips the Restorer's scaling: its docstring is where a user learns MSRN wants 0..255.
    import re

    from restorekit import registry

    doc = " ".join(load_model.__doc__.split())
    for arch in registry.list_archs():
        if arch.startswith("greynet"):  # the tests' own toy architecture
            continue
        entry = re.search(rf"``{arch}``: (.*?)(?: - ``|$)", doc)
        assert entry, f"load_model's docstring does not describe {arch}"
        value_range = registry.get_arch(arch).value_range
        assert (f"0..{value_range:g}") in entry.group(1).replace("**", ""), (arch, entry.group(1))
    net = load_model("msrn.sr_x2", pretrained=False, device="cpu")
    assert registry.get_arch("msrn").value_range == 255 and net(torch.rand(1, 3, 4, 4) * 255).shape == (1, 3, 8, 8)
