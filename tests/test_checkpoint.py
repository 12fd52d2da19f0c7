"""restorekit.train.checkpoint: where a run keeps its checkpoints, finding one, the format check, atomic saves."""

import pytest
import torch

from restorekit.train import CHECKPOINT_FORMAT
from restorekit.train.checkpoint import (
    REQUIRED_KEYS,
    TrainingError,
    checkpoint_path,
    find_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from restorekit.train.publish import ExportError


def _state(step: int) -> dict:
    return {
        "format": CHECKPOINT_FORMAT,
        "step": step,
        "arch": "msrn",
        "model_name": "msrn.sr_x2",
        "config": {"scale": 2},
        "model": {"w": torch.full((2,), float(step))},
    }


def test_save_writes_the_step_file_and_last(tmp_path):
    assert save_checkpoint(_state(3), tmp_path) == tmp_path / "checkpoints" / "step_00000003.pt"
    assert save_checkpoint(_state(12), tmp_path) == checkpoint_path(tmp_path, 12)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["last.pt", "step_00000003.pt", "step_00000012.pt"]
    assert checkpoint_path(tmp_path) == tmp_path / "checkpoints" / "last.pt"
    assert load_checkpoint(checkpoint_path(tmp_path))["step"] == 12
    assert torch.equal(load_checkpoint(checkpoint_path(tmp_path, 3))["model"]["w"], torch.full((2,), 3.0))


def test_find_by_last_step_or_path(tmp_path, monkeypatch):
    save_checkpoint(_state(5), tmp_path)
    folder = tmp_path / "checkpoints"
    assert find_checkpoint(tmp_path) == folder / "last.pt"
    assert find_checkpoint(tmp_path, 5) == find_checkpoint(tmp_path, "5") == folder / "step_00000005.pt"
    assert find_checkpoint(tmp_path, "step_00000005.pt") == folder / "step_00000005.pt"  # inside checkpoints/
    assert find_checkpoint(tmp_path, folder / "last.pt") == folder / "last.pt"
    monkeypatch.chdir(tmp_path)
    assert find_checkpoint(tmp_path, "checkpoints/last.pt").resolve() == (folder / "last.pt").resolve()

    with pytest.raises(TrainingError, match=r"step_00000007\.pt does not exist; .* has: last\.pt, step_00000005\.pt"):
        find_checkpoint(tmp_path, 7)
    with pytest.raises(ExportError, match="'last', a step number or a .pt path, not 'best'"):
        find_checkpoint(tmp_path, "best", error=ExportError)
    with pytest.raises(TrainingError, match="run folder .* does not exist"):
        find_checkpoint(tmp_path / "nope")


@pytest.mark.parametrize("key", REQUIRED_KEYS[1:])
def test_a_checkpoint_lacking_a_required_entry_is_refused(tmp_path, key):
    state = _state(1)
    del state[key]
    path = tmp_path / "c.pt"
    torch.save(state, path)
    with pytest.raises(TrainingError, match=f"lacks {key}; it was not written by restorekit-train"):
        load_checkpoint(path)
    with pytest.raises(ExportError, match=f"lacks {key}"):
        load_checkpoint(path, error=ExportError)


def test_a_foreign_file_is_refused(tmp_path):
    path = tmp_path / "authors.pt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(TrainingError, match="not a restorekit-train checkpoint .*restorekit convert"):
        load_checkpoint(path)
