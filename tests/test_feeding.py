"""The feeding contract: condition and size multiple declared on the ArchSpec, one packer, what run_batch drives."""

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import restorekit
from restorekit import registry
from restorekit.batch import ImageToImage, run_batch
from restorekit.errors import InputError
from restorekit.feeding import Feeding, pack
from restorekit.filters import L0Smooth
from restorekit.registry import ArchSpec, WeightRecord, get_arch, get_record, list_models
from restorekit.restorer import Restorer

PACKAGE = Path(restorekit.__file__).parent


def test_no_module_probes_a_network_for_what_it_is_fed():
    # What a network takes is declared on its ArchSpec (condition_for, size_multiple), never read off the module.
    probe = re.compile(r"getattr\([^)]*[\"'](mask_channels|condition|size_multiple)[\"']")
    found = [
        f"{path.relative_to(PACKAGE)}:{i}: {line.strip()}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for i, line in enumerate(path.read_text().splitlines(), 1)
        if probe.search(line)
    ]
    assert found == []


def test_every_record_agrees_with_its_declared_feeding():
    expect = {"spatial_rnn.inpaint": "mask", "spatial_rnn.colorize": "hints"}
    for name in list_models():
        rec = get_record(name)
        spec = get_arch(rec.arch)
        feeding = Feeding.of(spec, rec.config)
        assert feeding.size_multiple == spec.size_multiple == rec.size_multiple, name
        assert feeding.condition == expect.get(name), name
        assert feeding.mask_channels == (1 if name in expect else 0)
        assert feeding.value_range == spec.value_range
    assert get_arch("mprnet").size_multiple == get_arch("dsrir").size_multiple == 8
    spec = get_arch("spatial_rnn")
    assert spec.condition_for({}) is None  # the defaults: the plain network
    assert spec.condition_for({"condition": "hints"}) == "hints"


def test_the_spec_validates_what_it_declares():
    base = dict(name="feedtest", build=lambda **c: torch.nn.Identity(), default_config={}, tiny_config={}, paper="-")
    with pytest.raises(ValueError, match="condition must be None or one of"):
        ArchSpec(**base, condition="colour")
    with pytest.raises(ValueError, match="size_multiple must be a positive int"):
        ArchSpec(**base, size_multiple=0)
    chosen = ArchSpec(**{**base, "default_config": {"c": None}}, condition=lambda config: config["c"])
    assert chosen.condition_for({}) is None and chosen.condition_for({"c": "mask"}) == "mask"
    with pytest.raises(ValueError, match="condition must be None or one of"):
        chosen.condition_for({"c": "colour"})
    with pytest.raises(ValueError, match="condition must be None or one of"):
        Feeding("colour")
    # A record cannot contradict its architecture's size multiple (the one the Restorer pads to).
    spec = ArchSpec(**base, size_multiple=4)
    wrong = WeightRecord(arch="feedtest", tag="x", task="denoise", description="-", size_multiple=2)
    with registry.temporary(spec):
        with pytest.raises(ValueError, match=r"size_multiple 2 contradicts its architecture's .*= 4"):
            registry.register_weights(wrong)
        right = dataclasses.replace(wrong, size_multiple=4)
        registry.register_weights(right)
        assert get_record("feedtest.x").size_multiple == 4
        registry.unregister(right.name)
        # A record that states none takes its architecture's.
        registry.register_weights(dataclasses.replace(wrong, size_multiple=None))
        assert get_record("feedtest.x").size_multiple == 4
        registry.unregister(right.name)


def test_to_network_and_back():
    x = torch.rand(2, 3, 5, 7)
    mask = (torch.rand(1, 1, 5, 7) > 0.5).float()
    plain = Feeding()
    assert plain.to_network(x) is x and plain.split(x) == (x, None) and plain.from_network(x) is x
    sr = Feeding(value_range=255.0)
    assert torch.equal(sr.to_network(x), x * 255) and torch.equal(sr.from_network(x * 255), x * 255 / 255)
    masked = Feeding("mask", value_range=255.0)
    t = masked.to_network(x, mask)
    assert t.shape == (2, 4, 5, 7)
    assert torch.equal(t[:, :3], x * 255) and torch.equal(t[:, 3:], mask.expand(2, -1, -1, -1))  # the mask stays 0/1
    image, again = masked.split(pack(x, mask))
    assert torch.equal(image, x) and torch.equal(again, mask.expand(2, -1, -1, -1))
    assert torch.equal(masked.to_network(*masked.split(pack(x, mask))), t)
    with pytest.raises(InputError, match="needs its mask"):
        masked.to_network(x)
    with pytest.raises(InputError, match="takes no mask"):
        plain.to_network(x, mask)


def _tiny_record(name: str) -> WeightRecord:
    rec = get_record(name)
    tiny = dataclasses.replace(
        rec, tag=rec.tag + "_feedtest", default=False, config={**rec.config, **get_arch(rec.arch).tiny_config}
    )
    return tiny


def _folder(path: Path, n: int = 2, size=(12, 16), grey: bool = False) -> Path:
    path.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        shape = size if grey else (*size, 3)
        Image.fromarray(((rng.random(shape) > 0.5) * 255 if grey else rng.random(shape) * 255).astype(np.uint8)).save(
            path / f"img{i}.png"
        )
    return path


def test_restorer_and_l0_filter_are_what_run_batch_drives(tmp_path):
    images = _folder(tmp_path / "in")
    masks = _folder(tmp_path / "masks", grey=True)
    l0 = L0Smooth(0.05)
    assert isinstance(l0, ImageToImage) and l0.condition is None
    assert not isinstance(object(), ImageToImage)
    report = run_batch(l0, [images], tmp_path / "l0", progress=False)
    assert report.ok and sorted(p.name for p in report.written) == ["img0.png", "img1.png"]
    with pytest.raises(InputError, match="takes no mask"):
        run_batch(l0, [images], tmp_path / "l0_masked", masks=masks, progress=False)
    with pytest.raises(InputError, match="takes no mask"):
        l0.run(images / "img0.png", mask=masks / "img0.png")
    for name, condition in (("spatial_rnn.inpaint", "mask"), ("spatial_rnn.denoise", None)):
        tiny = _tiny_record(name)
        with registry.temporary(None, tiny):
            torch.manual_seed(0)
            restorer = Restorer(tiny.name, pretrained=False, device="cpu")
        assert isinstance(restorer, ImageToImage)
        assert restorer.condition == restorer.feeding.condition == condition
        assert restorer.mask_channels == (1 if condition else 0)
        given = masks if condition else None
        report = run_batch(restorer, [images], tmp_path / name, masks=given, progress=False)
        assert report.ok and len(report.written) == 2
        out = np.asarray(Image.open(tmp_path / name / "img0.png"))
        assert out.shape == (12, 16, 3)
        if condition:  # inpainting keeps the known pixels
            known = np.asarray(Image.open(masks / "img0.png")) > 127
            assert np.array_equal(out[known], np.asarray(Image.open(images / "img0.png"))[known])
            with pytest.raises(InputError, match="needs a mask per input"):
                run_batch(restorer, [images], tmp_path / "nomask", progress=False)


def test_trainer_refuses_a_config_that_changes_what_the_model_is_fed(tmp_path):
    from restorekit.train.config import resolve
    from restorekit.train.loop import Trainer

    tiny = dict(get_arch("spatial_rnn").tiny_config)
    cfg = resolve("spatial_rnn.denoise", overrides=dict(model_config={**tiny, "condition": "mask"}, device="cpu"))
    with pytest.raises(
        InputError, match=r"takes no mask; drop condition from model_config, or train spatial_rnn.inpaint$"
    ):
        Trainer(cfg, data=False)
    cfg = resolve("spatial_rnn.colorize", overrides=dict(model_config=tiny, device="cpu", out=str(tmp_path)))
    trainer = Trainer(cfg, data=False)
    assert trainer.feeding == Feeding("hints") and trainer.mask_channels == 1


def test_a_weights_file_must_be_fed_what_its_record_feeds(tmp_path, tiny_model):
    # A colouriser's file under the inpainting record has the same channel count (RGB + 1) but would be fed a mask
    # for hints: refused by name. The same file under its own record loads.
    from restorekit.errors import WeightsError
    from restorekit.weightfile import save_weights

    config = {**get_arch("spatial_rnn").tiny_config, "condition": "hints"}
    net = tiny_model("spatial_rnn", condition="hints")
    path = tmp_path / "colorize.safetensors"
    save_weights(path, net.state_dict(), arch="spatial_rnn", config=config)
    with pytest.raises(WeightsError, match=r"conditioned on hints, but spatial_rnn.inpaint feeds mask"):
        Restorer("spatial_rnn.inpaint", weights=path, device="cpu")
    with pytest.raises(WeightsError, match=r"conditioned on hints, but spatial_rnn.denoise feeds the image alone"):
        Restorer("spatial_rnn.denoise", weights=path, device="cpu")
    assert Restorer("spatial_rnn.colorize", weights=path, device="cpu").condition == "hints"
