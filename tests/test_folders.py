"""One folder scanner (restorekit.folders) for `restorekit run`, evaluation and training: the same rule everywhere."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from restorekit import batch, evaluate, folders
from restorekit.errors import InputError
from restorekit.train import data


def _png(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), 100, np.uint8)).save(path, format="PNG")
    return path


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "f"
    for name in ("b.png", "A.PNG", "c.JpG", "d.webp", "sub/e.png"):
        _png(root / name)
    # Not images: hidden files, an interrupted write's temporary, a macOS companion, other suffixes, a folder.
    for name in (".hidden.png", ".b.png.k1ll3d.tmp.png", "._b.png", "notes.txt", "noext"):
        _png(root / name)
    (root / "x.png.d").mkdir()
    return root


def test_every_caller_uses_the_one_scanner():
    assert evaluate.find_pairs is folders.find_pairs and data.find_pairs is folders.find_pairs
    assert data.image_files is folders.image_files and batch.image_files is folders.image_files


def test_the_rule_suffix_in_any_case_no_hidden_files_sorted(folder):
    want = ["A.PNG", "b.png", "c.JpG", "d.webp"]
    assert [p.name for p in folders.image_files(folder)] == want
    deep = folders.image_files(folder, recursive=True)
    assert [p.relative_to(folder).as_posix() for p in deep] == [*want, "sub/e.png"]
    assert folders.is_image_file("x/photo.TIFF") and not folders.is_image_file("x/.photo.png")
    # Evaluation and training see the same images (no subfolders: those are layouts); `run` adds the subfolders.
    layout, pairs = evaluate.find_pairs(folder)
    assert layout == "clean images" and [n for n, _, _ in pairs] == want
    for kind in ("auto", "clean"):
        items, _ = data.find_items([str(folder)], kind)
        assert [i.target.name for i in items] == want
    found, missing = batch.expand_inputs([folder])
    assert [rel.as_posix() for _, rel in found] == [*want, "sub/e.png"] and not missing
    # The output folder inside the input folder is never read as input.
    found, _ = batch.expand_inputs([folder], exclude=folder / "sub")
    assert [rel.as_posix() for _, rel in found] == want


def test_a_paired_folder_ignores_the_temporaries_of_an_interrupted_write(tmp_path):
    # Before one scanner, evaluation and training counted hidden files: a killed write's temporary in target/
    # made the folder "unpaired". Now every caller skips them, as `restorekit run` always did.
    root = tmp_path / "p"
    for sub in ("input", "target"):
        _png(root / sub / "a.png")
    _png(root / "target" / ".a.png.x1y2.tmp.png")
    layout, pairs = folders.find_pairs(root)
    assert layout == "target + input" and [n for n, _, _ in pairs] == ["a.png"]
    items, _ = data.find_items([str(root)])
    assert [(i.target.name, i.input.name) for i in items] == [("a.png", "a.png")]
    _png(root / "input" / "b.png")
    with pytest.raises(InputError, match="unpaired: b.png"):
        folders.find_pairs(root)


def test_a_folder_of_hidden_files_only_has_no_images(tmp_path):
    _png(tmp_path / "h" / ".only.png")
    with pytest.raises(InputError, match="holds no images"):
        folders.find_pairs(tmp_path / "h")
    found, missing = batch.expand_inputs([tmp_path / "h"])
    assert not found and "folder has no images" in missing[0][1]
