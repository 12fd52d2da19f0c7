"""The inference policy: it changes the speed, never the results, and the Restorer runs what the arch declares."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from restorekit import Restorer, policy, registry
from restorekit.errors import InputError, RestorekitError
from restorekit.feeding import Feeding
from restorekit.registry import get_arch

RECORDS = ["msrn.sr_x2", "memnet.denoise_s50", "mprnet.deblur", "dsrir.all_in_one", "spatial_rnn.denoise"]


def _convs(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p for p in model.parameters() if p.ndim == 4]


@pytest.mark.parametrize("name", RECORDS)
def test_channels_last_gives_the_same_output_as_contiguous(name, tiny_record):
    rec = tiny_record(name)
    spec = get_arch(rec.arch)
    torch.manual_seed(0)
    model = spec.build(**rec.config).eval()
    feeding = Feeding.of(spec, rec.config)
    m = feeding.size_multiple
    x = torch.rand(
        2, rec.in_channels, 4 * m + 8 * (m == 1), 3 * m + 8 * (m == 1), generator=torch.Generator().manual_seed(1)
    )
    x = feeding.to_network(x, torch.ones(2, 1, *x.shape[-2:]) if feeding.condition else None)
    with torch.inference_mode():
        want = model(x)
        fast = policy.prepare_model(model, policy.InferencePolicy(memory_format="channels_last"))
        assert all(p.is_contiguous(memory_format=torch.channels_last) for p in _convs(fast))
        got = fast(policy.prepare_input(x, policy.InferencePolicy(memory_format="channels_last")))
    want = spec.select_output(want) if spec.select_output else want
    got = spec.select_output(got) if spec.select_output else got
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", RECORDS)
def test_the_restorer_runs_the_declared_policy(name, tiny_record):
    rec = tiny_record(name)
    with registry.temporary(None, rec):
        r = Restorer(rec.name, pretrained=False, device="cpu", tile=None)
    declared = get_arch(rec.arch).policy.cpu
    assert r.policy == declared
    fmt = torch.channels_last if declared.channels_last else torch.contiguous_format
    assert all(p.is_contiguous(memory_format=fmt) for p in _convs(r.model))


def test_policy_values_are_checked():
    with pytest.raises(ValueError, match="memory_format"):
        policy.InferencePolicy(memory_format="nhwc")
    assert policy.ArchPolicy().for_device("mps") == policy.TODAY
    assert policy.ArchPolicy(cuda=policy.InferencePolicy("channels_last")).for_device("cuda:1").channels_last


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_compile_must_be_a_bool(value, tiny_record):
    rec = tiny_record("msrn.sr_x2")
    with registry.temporary(None, rec), pytest.raises(InputError, match="compile must be True or False"):
        Restorer(rec.name, pretrained=False, device="cpu", compile=value)


def test_compile_is_refused_clearly_without_a_compiler(tiny_record, monkeypatch):
    monkeypatch.setenv("CXX", "no-such-compiler-here")
    rec = tiny_record("msrn.sr_x2")
    with registry.temporary(None, rec), pytest.raises(RestorekitError, match="C\\+\\+ compiler"):
        Restorer(rec.name, pretrained=False, device="cpu", compile=True)


@pytest.mark.slow
def test_compiled_restorer_gives_the_eager_result(tiny_record):
    if policy.compile_problem("cpu"):
        pytest.skip(f"cannot compile here: {policy.compile_problem('cpu')}")
    rec = tiny_record("msrn.sr_x2")
    image = np.random.default_rng(0).random((12, 10, 3), dtype=np.float32)
    with registry.temporary(None, rec):
        torch.manual_seed(0)
        eager = Restorer(rec.name, pretrained=False, device="cpu", tile=None)
        compiled = Restorer(rec.name, weights=None, pretrained=False, device="cpu", tile=None, compile=True)
        compiled.model.load_state_dict(eager.model.state_dict())
        np.testing.assert_allclose(compiled.run(image), eager.run(image), atol=1e-4)
        # A second size recompiles (dynamic shapes) and still agrees.
        other = image[:9, :7]
        np.testing.assert_allclose(compiled.run(other), eager.run(other), atol=1e-4)
