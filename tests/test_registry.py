import dataclasses

import pytest
import torch

from restorekit import registry
from restorekit.errors import RestorekitError, UnknownModelError
from restorekit.registry import ArchSpec, HubSource, UrlSource, WeightRecord, get_record, list_models, model_info


def test_names_are_arch_dot_tag_and_msrn_is_registered():
    names = list_models()
    assert {"msrn.sr_x2", "msrn.sr_x3", "msrn.sr_x4"} <= set(names)
    assert all(n.count(".") == 1 for n in names)


def test_arch_alone_resolves_to_default_and_narrows():
    assert get_record("msrn").name == "msrn.sr_x4"
    assert get_record("msrn", scale=2).name == "msrn.sr_x2"
    assert get_record("msrn", "sr", scale=3).name == "msrn.sr_x3"
    with pytest.raises(UnknownModelError, match="no model with task='denoise'"):
        get_record("msrn", "denoise")
    with pytest.raises(UnknownModelError, match="has scale 2, not 4"):
        get_record("msrn.sr_x2", scale=4)


@pytest.mark.parametrize(
    "bad,expect",
    [("msrm", "msrn"), ("msrn.sr_x5", "msrn.sr_x"), ("msrn.srx4", "msrn.sr_x4"), ("nosuchnet.foo", "restorekit list")],
)
def test_unknown_names_suggest_close_matches(bad, expect):
    with pytest.raises(UnknownModelError) as info:
        get_record(bad)
    msg = str(info.value)
    assert expect in msg and "restorekit list" in msg
    assert isinstance(info.value, RestorekitError) and isinstance(info.value, KeyError)


def test_list_models_filters():
    assert list_models(task="sr", arch="msrn") == sorted(n for n in list_models() if n.startswith("msrn."))
    assert list_models(task="derain", arch="msrn") == []
    with pytest.raises(UnknownModelError, match="Unknown task"):
        list_models(task="sharpen")
    with pytest.raises(UnknownModelError, match="Did you mean 'msrn'"):
        list_models(arch="msrnn")


def test_records_are_frozen_and_validated():
    rec = get_record("msrn.sr_x4")
    with pytest.raises(dataclasses.FrozenInstanceError):
        rec.scale = 2  # type: ignore[misc]
    with pytest.raises(TypeError):
        rec.config["scale"] = 2  # type: ignore[index]
    base = dict(arch="msrn", tag="t", task="sr", description="x")
    with pytest.raises(ValueError, match="task"):
        WeightRecord(**{**base, "task": "sharpen"})
    with pytest.raises(ValueError, match="float32"):
        WeightRecord(**base, dtypes=("float16",))
    with pytest.raises(ValueError, match="40-hex"):
        WeightRecord(**base, hub=HubSource("a/b", "f.safetensors", revision="main", sha256="0" * 64))
    with pytest.raises(ValueError, match="pinned"):
        WeightRecord(**base, upstream=UrlSource("http://127.0.0.1/x.pt"))
    with pytest.raises(ValueError, match="sha256"):
        WeightRecord(**base, upstream=UrlSource("http://127.0.0.1/x.pt", sha256="ABC"))


def test_model_info_returns_everything_and_format_info_prints_it(capsys):
    from restorekit.registry import format_info

    info = model_info("msrn.sr_x2")
    assert capsys.readouterr().out == "", "model_info returns data; the CLI prints it"
    assert model_info("msrn.sr_x2", as_dict=True) == info  # the older keyword is still accepted
    out = format_info(info)
    for text in (
        "msrn.sr_x2",
        "MIT",
        "3f8567d12441e9c325d9dc476f5751ac22f34cae",
        "5930331",
        "ECCV 2018",
        "not published yet",
    ):
        assert text in out
    assert info["params"] == 5_930_331 and info["upstream"]["git_blob_sha1"].startswith("3f85")
    assert info["metrics"][0]["source"] == "reported"


def test_temporary_registration_and_duplicates():
    spec = ArchSpec(name="tmpnet", build=lambda **c: torch.nn.Identity(), default_config={}, tiny_config={}, paper="-")
    rec = WeightRecord(arch="tmpnet", tag="a", task="denoise", description="t", default=True)
    with registry.temporary(spec, rec):
        assert get_record("tmpnet").name == "tmpnet.a"
        with pytest.raises(ValueError, match="twice"):
            registry.register_weights(rec)
        with pytest.raises(ValueError, match="default"):
            registry.register_weights(dataclasses.replace(rec, tag="b"))
    with pytest.raises(UnknownModelError):
        get_record("tmpnet")
    with pytest.raises(ValueError, match="register architecture"):
        registry.register_weights(rec)


@pytest.mark.parametrize("arch", ["dsrir", "memnet", "mprnet", "msrn", "spatial_rnn"])
def test_records_speak_of_the_weights_not_of_how_the_project_is_run(arch):
    # What `restorekit info` shows a user: where the weights come from, never the project's internal bookkeeping.
    import re

    from restorekit.registry import format_info

    for name in list_models(arch=arch):
        text = format_info(model_info(name, as_dict=True))
        found = re.search(r".{0,40}\bissues?\b.{0,40}", text, re.IGNORECASE)
        assert found is None, f"{name}: {found.group(0)!r}"
