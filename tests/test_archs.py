"""Every registered architecture and model gets the same checks (tiny random-init variants)."""

import pytest
import torch

from restorekit.feeding import Feeding
from restorekit.registry import get_arch, get_record, list_archs, list_models
from restorekit.weights import build_model, read_weights, save_weights

MODELS = list_models()
ARCHS = list_archs()


def _tiny(name: str) -> tuple[torch.nn.Module, object]:
    rec = get_record(name)
    spec = get_arch(rec.arch)
    model = build_model(rec.arch, {**rec.config, **spec.tiny_config})
    return model, rec


def _tensors(out: object) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    return [t for item in out for t in _tensors(item)] if isinstance(out, (list, tuple)) else []


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", MODELS)
def test_full_size_parameter_count_matches_record(name):
    rec = get_record(name)
    assert rec.params is not None, f"{name}: record its parameter count"
    with torch.device("meta"):  # no memory, no init time: shapes only
        model = build_model(rec.arch, rec.config)
    assert _params(model) == rec.params


@pytest.mark.parametrize("name", MODELS)
def test_tiny_forward_backward_shapes(name):
    torch.manual_seed(0)
    model, rec = _tiny(name)
    spec = get_arch(rec.arch)
    feeding = Feeding.of(spec, rec.config)  # as declared: inpainting/colourisation nets take a mask channel too
    m = feeding.size_multiple
    assert m == rec.size_multiple
    h, w = 2 * max(m, 8), 3 * max(m, 8)
    mask = torch.rand(2, 1, h, w).round() if feeding.condition else None
    x = feeding.to_network(torch.rand(2, rec.in_channels, h, w), mask).requires_grad_()
    out = model(x)
    y = spec.select_output(out) if spec.select_output else out
    assert y.shape == (2, rec.out_channels, h * rec.net_scale, w * rec.net_scale)
    # Every output of a multi-output network (side outputs, uncertainty maps) takes part in the backward.
    sum(t.float().mean() for t in _tensors(out)).backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    # A faithful port may keep parameters that the authors' checkpoint holds but their forward never uses;
    # the network declares them by name, so any other parameter without a gradient is a bug.
    unused = set(getattr(model, "unused_parameters", ()))
    assert grads and {n for n, g in grads.items() if g is None} == unused
    assert all(torch.isfinite(g).all() for g in grads.values() if g is not None)
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("name", MODELS)
def test_safetensors_round_trip(name, tmp_path):
    torch.manual_seed(0)
    model, rec = _tiny(name)
    spec = get_arch(rec.arch)
    config = {**rec.config, **spec.tiny_config}
    path = tmp_path / "w.safetensors"
    digest = save_weights(path, model.state_dict(), arch=rec.arch, config=config, name=name)
    sd, header = read_weights(path)
    assert header["arch"] == rec.arch and header["config"] == config and header["format_version"] == 1
    again = build_model(header["arch"], header["config"])
    again.load_state_dict(sd, strict=True)
    feeding = Feeding.of(spec, config)
    x = feeding.to_network(
        torch.rand(1, rec.in_channels, 16, 16), torch.ones(1, 1, 16, 16) if feeding.condition else None
    )
    select = spec.select_output or (lambda out: out)  # multi-output networks (MemNet, MPRNet)
    with torch.inference_mode():
        assert torch.equal(select(model.eval()(x)), select(again.eval()(x)))
    # state dict -> file -> state dict -> file gives the same bytes
    assert (
        save_weights(tmp_path / "w2.safetensors", again.state_dict(), arch=rec.arch, config=config, name=name) == digest
    )


@pytest.mark.parametrize("arch", ARCHS)
def test_every_arch_has_a_default_tag(arch):
    assert get_record(arch).default


@pytest.mark.parametrize("arch", ARCHS)
def test_receptive_field_claim_holds(arch):
    # The registered radius is what makes tiled == whole; check it with a gradient probe.
    spec = get_arch(arch)
    rec = get_record(arch)
    if spec.receptive_field_for(rec.config) is None:
        pytest.skip(f"{arch} has a global receptive field")
    torch.manual_seed(0)
    model = build_model(arch, rec.config).eval()  # full size: the radius depends on the depth
    r = spec.receptive_field_for(rec.config)
    size = 2 * r + 9
    x = torch.rand(1, rec.in_channels, size, size, requires_grad=True)
    out = model(x * spec.value_range)
    out = spec.select_output(out) if spec.select_output else out
    c = size // 2 * rec.net_scale
    out[..., c, c].sum().backward()
    nz = x.grad.abs().sum(dim=(0, 1)).nonzero()
    radius = int((nz - size // 2).abs().max())
    assert r - 1 <= radius <= r, f"{arch}: gradient reaches {radius} px, record says {r}"


@pytest.mark.parametrize("name", MODELS)
def test_restorer_pads_and_crops_any_size(name, tiny_record):
    # The Restorer's contract on each registered model at tiny size: odd sizes in, exact scale x size out.

    from restorekit import registry
    from restorekit.restorer import Restorer

    rec = get_record(name)
    tiny = tiny_record(name, "_tinytest")
    with registry.temporary(None, tiny):
        r = Restorer(tiny.name, pretrained=False, device="cpu")
        for h, w in [(1, 1), (7, 13), (rec.size_multiple + 1, 2 * rec.size_multiple - 1)]:
            mask = torch.rand(h, w).round() if r.mask_channels else None
            out = r.run(torch.rand(rec.in_channels, h, w), mask=mask)
            assert out.shape == (rec.out_channels, h * rec.scale, w * rec.scale)
            assert float(out.min()) >= 0 and float(out.max()) <= 1
