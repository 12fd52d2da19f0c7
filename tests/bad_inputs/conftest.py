"""Fixtures of the bad-input and fault corpus: fast models (``deadline.finishes`` proves a call does not hang)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from restorekit import registry
from restorekit.restorer import Restorer


@pytest.fixture(scope="module")
def tiny_sr(tiny_record) -> Iterator[Restorer]:
    """A random-init tiny MSRN x2 (any colour input, fast); registered only while a module uses it, so that no
    other test sees it in list_models()."""
    rec = tiny_record("msrn.sr_x2", "_corpus")
    with registry.temporary(None, rec):
        torch.manual_seed(0)
        yield Restorer(rec.name, pretrained=False, device="cpu")


@pytest.fixture(scope="module")
def denoiser() -> Restorer:
    """The bundled spatial_rnn.denoise: real weights, offline, ~0.3 MB."""
    return Restorer("spatial_rnn.denoise", device="cpu")
