"""restorekit.weights: our file format, checkpoint reading, and resolve() against real local HTTP servers."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from restorekit import fetch, registry, weightfile
from restorekit.errors import ChecksumError, ConversionError, WeightsError, WeightsNotAvailableError
from restorekit.registry import ArchSpec, BundledSource, HubSource, UrlSource, WeightRecord
from restorekit.weights import (
    cache_dir,
    check_state_dict,
    convert,
    git_blob_sha1_file,
    hf_cache_dir,
    is_offline,
    load_model,
    read_checkpoint,
    read_weights,
    resolve,
    save_weights,
    sha256_file,
)

ARCH = "wtest"
CONFIG = {"channels": 4}


class TinyNet(nn.Module):
    def __init__(self, *, channels: int = 4, colors: int = 3, scale: int = 1) -> None:
        super().__init__()
        self.scale = scale  # a contract key only: the registry's config_for_scale names it
        self.head = nn.Conv2d(colors, channels, 3, padding=1)
        self.tail = nn.Conv2d(channels, colors, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.tail(torch.relu(self.head(x)))


def _drop_aux(state_dict: dict, config: dict) -> dict:
    return {k: v for k, v in state_dict.items() if not k.startswith("aux.")}


SPEC = ArchSpec(
    name=ARCH,
    build=lambda **cfg: TinyNet(**cfg),
    default_config={"channels": 4, "colors": 3, "scale": 1},
    tiny_config={},
    paper="test only",
    filter_checkpoint=_drop_aux,
    config_for_scale=lambda s: {"scale": s},
)
FULL_CONFIG = {"channels": 4, "colors": 3, "scale": 1}


class Payload:
    """An arbitrary class: a pickle holding one must be refused."""


@pytest.fixture(autouse=True)
def _arch() -> Iterator[None]:
    with registry.temporary(SPEC):
        yield


@pytest.fixture
def register() -> Iterator[Callable[..., WeightRecord]]:
    """Register records for the rest of the test (load_model looks them up by name)."""
    from contextlib import ExitStack

    with ExitStack() as stack:

        def _register(*records: WeightRecord) -> WeightRecord:
            stack.enter_context(registry.temporary(None, *records))
            return records[0]

        yield _register


@pytest.fixture
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Downloads retry 5xx and broken bodies after 1, 2, 4 s; keep the retries, shorten the waiting."""
    monkeypatch.setenv("RESTOREKIT_RETRY_WAIT", "0.01")


def record(tag: str = "m", **sources: object) -> WeightRecord:
    return WeightRecord(arch=ARCH, tag=tag, task="denoise", description="test weights", config=CONFIG, **sources)


def state(seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return TinyNet(**CONFIG).state_dict()


def ours(tmp_path: Path, seed: int = 0, name: str = "w.safetensors") -> bytes:
    path = tmp_path / name
    save_weights(path, state(seed), arch=ARCH, config=CONFIG, name=f"{ARCH}.m")
    return path.read_bytes()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def publish(server, data: bytes, repo: str = "org/tiny", filename: str = "tiny.safetensors") -> HubSource:
    commit = server.add_file(repo, filename, data)
    return HubSource(repo_id=repo, filename=filename, revision=commit, sha256=sha256(data), size=len(data))


def authors_checkpoint(seed: int = 0) -> bytes:
    """A typical training-script file: DataParallel keys, wrapped, with bookkeeping and an extra head."""
    sd = {"module." + k: v for k, v in state(seed).items()}
    sd["module.aux.weight"] = torch.zeros(2)
    buf = io.BytesIO()
    torch.save({"state_dict": sd, "epoch": 300, "optimizer": {"lr": 1e-4}}, buf)
    return buf.getvalue()


def same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def files_holding(root: Path, data: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and p.read_bytes() == data] if root.exists() else []


# --------------------------------------------------------------------------------------------------- environment


def test_cache_dir_follows_env_at_call_time(monkeypatch, tmp_path):
    monkeypatch.setenv("RESTOREKIT_CACHE", str(tmp_path / "rk"))
    assert cache_dir() == tmp_path / "rk"
    monkeypatch.delenv("RESTOREKIT_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "restorekit"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "restorekit"


def test_hf_cache_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert hf_cache_dir() == tmp_path / "hub"
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert hf_cache_dir() == tmp_path / "hf" / "hub"
    monkeypatch.delenv("HF_HOME")
    assert hf_cache_dir() is None


@pytest.mark.parametrize(
    ("var", "value", "expected"),
    [
        ("RESTOREKIT_OFFLINE", "1", True),
        ("HF_HUB_OFFLINE", "TRUE", True),
        ("HF_HUB_OFFLINE", "on", True),
        ("RESTOREKIT_OFFLINE", "0", False),
        ("HF_HUB_OFFLINE", "", False),
    ],
)
def test_is_offline(monkeypatch, var, value, expected):
    monkeypatch.delenv("RESTOREKIT_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv(var, value)
    assert is_offline() is expected


def test_digests(tmp_path):
    path = tmp_path / "hello.txt"
    path.write_bytes(b"hello\n")
    assert git_blob_sha1_file(path) == "ce013625030ba8dba906f756967f9e9ca394464a"  # `git hash-object`
    assert sha256_file(path) == sha256(b"hello\n")


# --------------------------------------------------------------------------------------------------- file format


def test_save_read_round_trip(tmp_path):
    from safetensors import safe_open

    path = tmp_path / "sub" / "w.safetensors"
    digest = save_weights(path, state(), arch=ARCH, config=CONFIG, name=f"{ARCH}.m")
    assert digest == sha256_file(path)
    assert [p.name for p in path.parent.iterdir()] == ["w.safetensors"]  # no temporary file left behind
    sd, header = read_weights(path)
    assert same_state(sd, state())
    assert header == {"format_version": 1, "arch": ARCH, "config": CONFIG, "name": f"{ARCH}.m"}
    with safe_open(str(path), framework="pt") as f:
        assert list(f.metadata()) == ["restorekit"]


def test_bytes_are_reproducible_even_for_views_and_tied_tensors(tmp_path):
    base = torch.arange(12.0).reshape(3, 4)
    sd = {"b.weight": base, "a.weight": base, "t.weight": base.t(), "row": base[1]}
    one = save_weights(tmp_path / "1.safetensors", sd, arch=ARCH, config={"z": 1, "a": [1, 2]})
    two = save_weights(
        tmp_path / "2.safetensors", dict(reversed(list(sd.items()))), arch=ARCH, config={"a": [1, 2], "z": 1}
    )
    assert one == two
    back, header = read_weights(tmp_path / "1.safetensors")
    assert same_state(back, {k: v.contiguous() for k, v in sd.items()})
    assert header["name"] is None


def test_read_weights_rejects_foreign_and_corrupt_files(tmp_path):
    from safetensors.torch import save_file

    bare = tmp_path / "bare.safetensors"
    save_file({"w": torch.ones(2)}, str(bare))
    with pytest.raises(WeightsError, match="not a restorekit one") as info:
        read_weights(bare)
    assert str(bare) in str(info.value)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(WeightsError, match="junk.safetensors"):
        read_weights(junk)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(ours(tmp_path)[:-10])
    with pytest.raises(WeightsError, match="truncated.safetensors"):
        read_weights(truncated)


def test_read_weights_refuses_a_newer_format(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "future.safetensors"
    header = {"format_version": 99, "arch": ARCH, "config": {}, "name": None}
    save_file({"w": torch.ones(1)}, str(path), metadata={"restorekit": json.dumps(header)})
    with pytest.raises(WeightsError, match="Upgrade restorekit"):
        read_weights(path)


def test_read_checkpoint_canonicalises(tmp_path):
    path = tmp_path / "authors.pth"
    path.write_bytes(authors_checkpoint())
    assert same_state(read_checkpoint(path, SPEC, CONFIG), state())  # unwrapped, module. stripped, aux dropped
    ema = tmp_path / "ema.pth"
    torch.save({"params": state(1), "params_ema": state(2)}, ema)
    assert same_state(read_checkpoint(ema, SPEC, CONFIG), state(2))
    ours(tmp_path)
    assert same_state(read_checkpoint(tmp_path / "w.safetensors", SPEC, CONFIG), state())


def test_read_checkpoint_refuses_arbitrary_objects(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"head.weight": torch.ones(1), "payload": Payload()}, path)
    with pytest.raises(ConversionError, match="refused for safety") as info:
        read_checkpoint(path, SPEC, CONFIG)
    assert "Payload" in str(info.value)


def test_read_checkpoint_rejects_leftover_non_tensors(tmp_path):
    path = tmp_path / "mixed.pt"
    torch.save({**state(), "epoch": 3}, path)
    with pytest.raises(ConversionError, match="epoch"):
        read_checkpoint(path, SPEC, CONFIG)


# --------------------------------------------------------------------------------------------------- load_model


def test_load_model_random_init(register):
    register(record("unpub"))
    model = load_model(f"{ARCH}.unpub", pretrained=False)
    assert isinstance(model, TinyNet) and not model.training
    assert next(model.parameters()).device.type == "cpu"


def test_load_model_from_local_weights(register, tmp_path):
    register(record("unpub"))
    ours(tmp_path, seed=3)
    model = load_model(f"{ARCH}.unpub", weights=tmp_path / "w.safetensors")
    assert same_state(model.state_dict(), state(3))
    foreign = tmp_path / "authors.pth"
    foreign.write_bytes(authors_checkpoint(seed=4))
    assert same_state(load_model(f"{ARCH}.unpub", weights=str(foreign)).state_dict(), state(4))


def test_load_model_from_file_alone(tmp_path):
    save_weights(tmp_path / "x.safetensors", state(5), arch=ARCH, config={"channels": 4, "colors": 3})
    model = load_model(str(tmp_path / "x.safetensors"), device="cpu")
    assert isinstance(model, TinyNet) and not model.training
    assert same_state(model.state_dict(), state(5))


def test_load_model_with_our_file_builds_the_files_config(register, tmp_path):
    register(record("unpub"))
    wide = TinyNet(channels=8).state_dict()
    save_weights(tmp_path / "wide.safetensors", wide, arch=ARCH, config={"channels": 8})
    model = load_model(f"{ARCH}.unpub", weights=tmp_path / "wide.safetensors")
    assert model.head.out_channels == 8 and same_state(model.state_dict(), wide)


def test_load_model_refuses_a_file_that_contradicts_the_record(register, tmp_path):
    register(record("unpub"))
    save_weights(tmp_path / "other.safetensors", state(), arch="otherarch", config=CONFIG)
    with pytest.raises(WeightsError, match="otherarch"):
        load_model(f"{ARCH}.unpub", weights=tmp_path / "other.safetensors")
    save_weights(tmp_path / "x2.safetensors", state(), arch=ARCH, config={**CONFIG, "scale": 2})
    with pytest.raises(WeightsError, match="x1 model"):
        load_model(f"{ARCH}.unpub", weights=tmp_path / "x2.safetensors")


def test_strict_key_mismatch_lists_the_keys(register, tmp_path):
    register(record("unpub"))
    sd = state()
    del sd["tail.bias"]
    sd["extra.weight"] = torch.ones(1)
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(WeightsError) as info:
        load_model(f"{ARCH}.unpub", weights=tmp_path / "bad.pth")
    assert "missing keys: tail.bias" in str(info.value) and "unexpected keys: extra.weight" in str(info.value)


def test_check_state_dict_says_what_does_not_fit():
    assert check_state_dict(state(), ARCH, CONFIG) is None
    assert check_state_dict(state(), ARCH) is None  # the defaults: channels 4
    wide = TinyNet(channels=6).state_dict()
    with pytest.raises(WeightsError, match=r"from the state dict do not fit the TinyNet network: shape mismatches"):
        check_state_dict(wide, ARCH, CONFIG)
    assert check_state_dict(wide, ARCH, {"channels": 6}) is None
    sd = state()
    del sd["tail.bias"]
    sd["extra.weight"] = torch.ones(1)

    class NotFitting(WeightsError):
        pass

    with pytest.raises(NotFitting) as info:
        check_state_dict(sd, ARCH, CONFIG, source="run/step_1.pt", error=NotFitting)
    text = str(info.value)
    assert text.startswith("weights from run/step_1.pt do not fit")
    assert "missing keys: tail.bias" in text and "unexpected keys: extra.weight" in text


def test_unpublished_record_says_what_to_do(register):
    register(record("unpub", notes="training is still running"))
    with pytest.raises(WeightsNotAvailableError) as info:
        load_model(f"{ARCH}.unpub")
    message = str(info.value)
    assert "not published yet (training is still running)" in message
    assert "weights=PATH" in message and "pretrained=False" in message


def test_convert_authors_checkpoint(register, tmp_path):
    rec = register(record("m", upstream=UrlSource(url="http://127.0.0.1:9/x.pth", git_blob_sha1="0" * 40)))
    src = tmp_path / "authors.pth"
    src.write_bytes(authors_checkpoint(seed=6))
    out = convert(src, tmp_path / "converted.safetensors", model=rec.name)
    sd, header = read_weights(out)
    assert same_state(sd, state(6))
    assert header["arch"] == ARCH and header["name"] == rec.name and header["config"] == FULL_CONFIG
    assert read_weights(convert(src, tmp_path, arch=ARCH))[1]["name"] is None
    torch.save({"head.weight": torch.ones(1)}, tmp_path / "wrong.pth")
    with pytest.raises(ConversionError, match="missing keys"):
        convert(tmp_path / "wrong.pth", tmp_path / "wrong.safetensors", arch=ARCH)


# --------------------------------------------------------------------------------------------------- bundled


def test_bundled_weights(monkeypatch, tmp_path):
    data = ours(tmp_path)
    monkeypatch.setattr(fetch, "BUNDLED_DIR", tmp_path)
    good = record(bundled=BundledSource(filename="w.safetensors", sha256=sha256(data), size=len(data)))
    assert resolve(good, progress=False) == tmp_path / "w.safetensors"
    bad = record(bundled=BundledSource(filename="w.safetensors", sha256="0" * 64, size=len(data)))
    with pytest.raises(ChecksumError, match="[Rr]einstall"):
        resolve(bad, progress=False)


# --------------------------------------------------------------------------------------------------- hub


def test_hub_download_then_cache_hit(hub_server, isolated_cache, tmp_path, monkeypatch):
    data = ours(tmp_path)
    rec = record(hub=publish(hub_server, data))
    path = resolve(rec, progress=False)
    assert path.read_bytes() == data
    assert Path(isolated_cache.hf_hub) in path.parents
    # The commit and the digest are pinned: one GET of the resolve URL, nothing to ask the server first.
    assert hub_server.requests == [("GET", f"/org/tiny/resolve/{rec.hub.revision}/tiny.safetensors")]
    assert all("x-xet" not in h for headers in hub_server.request_headers for h in headers)

    hashed = []
    monkeypatch.setattr(weightfile, "sha256_file", lambda p: hashed.append(p) or sha256_file(p))
    hub_server.clear_log()
    assert resolve(rec, progress=False) == path
    assert hub_server.requests == []  # a pinned commit in the cache needs no request at all
    assert hashed == []  # and its digest was verified earlier in this process


@pytest.mark.slow  # spawns a process
def test_cache_hit_in_a_fresh_process_makes_no_request(hub_server, isolated_cache, tmp_path, monkeypatch):
    # In a new process huggingface_hub has not yet fetched what it fetches once per process (with
    # telemetry on, as users have it): the cache hit must still stay off the network.
    data = ours(tmp_path)
    hub = publish(hub_server, data)
    path = resolve(record(hub=hub), progress=False)
    hub_server.clear_log()
    code = (
        "import sys; from restorekit.registry import HubSource, WeightRecord;"
        "from restorekit.weights import resolve; hub = HubSource(*sys.argv[1:4], sha256=sys.argv[4]);"
        "print(resolve(WeightRecord(arch='wtest', tag='m', task='denoise', description='', hub=hub)))"
    )
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_DISABLE_TELEMETRY"}
    env["HF_HOME"] = str(tmp_path / "fresh_hf_home")
    out = subprocess.run(
        [sys.executable, "-c", code, hub.repo_id, hub.filename, hub.revision, hub.sha256],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parent.parent,
    )
    assert out.stdout.strip() == str(path)
    assert hub_server.requests == []


def test_load_model_from_hub(hub_server, register, tmp_path):
    rec = register(record(hub=publish(hub_server, ours(tmp_path, seed=7))))
    model = load_model(rec.name)
    assert same_state(model.state_dict(), state(7)) and not model.training


def test_hub_lfs_style_redirect(hub_server, tmp_path):
    hub_server.lfs_redirects = True
    data = ours(tmp_path)
    path = resolve(record(hub=publish(hub_server, data)), progress=True)
    assert path.read_bytes() == data
    assert [m for m, _ in hub_server.requests] == ["GET", "GET"]
    assert hub_server.requests[1][1].startswith("/cdn/")


def test_hub_checksum_mismatch_leaves_no_poisoned_cache(hub_server, isolated_cache, tmp_path):
    data = ours(tmp_path)
    hub = publish(hub_server, data)
    bad = ours(tmp_path, seed=1, name="bad.safetensors")
    hub_server.corrupt(hub.repo_id, hub.filename, bad)
    with pytest.raises(ChecksumError) as info:
        resolve(record(hub=hub), progress=False)
    message = str(info.value)
    assert f"{hub.repo_id}/{hub.filename}" in message and hub.sha256 in message and sha256(bad) in message
    assert files_holding(isolated_cache.hf_hub, bad) == []
    assert not list(isolated_cache.hf_hub.rglob("snapshots/*/tiny.safetensors"))

    hub_server.reset()
    assert resolve(record(hub=hub), progress=False).read_bytes() == data


def test_hub_missing_file_is_reported(hub_server, tmp_path):
    hub = publish(hub_server, ours(tmp_path))
    missing = HubSource(
        repo_id=hub.repo_id, filename="absent.safetensors", revision=hub.revision, sha256=hub.sha256, size=hub.size
    )
    with pytest.raises(WeightsNotAvailableError, match="EntryNotFound") as info:
        resolve(record(hub=missing), progress=False)
    assert "org/tiny/absent.safetensors" in str(info.value)


def test_hub_transient_server_error_is_retried(hub_server, tmp_path, caplog):
    data = ours(tmp_path)
    rec = record(hub=publish(hub_server, data))
    hub_server.fail_with(500)
    with caplog.at_level("WARNING", logger="restorekit"):
        assert resolve(rec, progress=False).read_bytes() == data
    assert [m for m, _ in hub_server.requests] == ["GET", "GET"]
    assert "HTTP 500" in caplog.text and "retrying in 1.0 s (attempt 2 of 4)" in caplog.text


def test_hub_persistent_server_error(hub_server, no_backoff, tmp_path):
    rec = record(hub=publish(hub_server, ours(tmp_path)))
    hub_server.fail_with(500, times=100)
    with pytest.raises(WeightsNotAvailableError) as info:
        resolve(rec, progress=False)
    assert "hub org/tiny/tiny.safetensors" in str(info.value) and "500" in str(info.value)


def test_hub_failure_falls_back_to_upstream(hub_server, file_server, no_backoff, tmp_path):
    data = authors_checkpoint(seed=8)
    url = file_server.add("/x1.pth", data)
    rec = record(hub=publish(hub_server, ours(tmp_path)), upstream=UrlSource(url=url, git_blob_sha1=blob_sha1(data)))
    hub_server.fail_with(503, times=4)  # the first try and every retry
    path = resolve(rec, progress=False)
    assert same_state(read_weights(path)[0], state(8))
    assert file_server.requests == [("GET", "/x1.pth")] and len(hub_server.requests) == 4


def test_hub_truncated_body_is_resumed(hub_server, no_backoff, tmp_path):
    data = ours(tmp_path)
    rec = record(hub=publish(hub_server, data))
    hub_server.truncate_next(100)
    assert resolve(rec, progress=False).read_bytes() == data
    assert [m for m, _ in hub_server.requests] == ["GET", "GET"]
    assert hub_server.request_headers[1]["range"] == "bytes=100-", "the second GET asks only for the rest"


def test_hub_body_always_truncated(hub_server, no_backoff, isolated_cache, tmp_path):
    data = ours(tmp_path)
    rec = record(hub=publish(hub_server, data))
    hub_server.truncate_next(100, times=100)
    with pytest.raises(WeightsNotAvailableError, match="hub org/tiny"):
        resolve(rec, progress=False)
    assert not list(isolated_cache.hf_hub.rglob("blobs/*")) and not list(isolated_cache.hf_hub.rglob("snapshots/*/*"))


def test_hub_offline_with_cache(hub_server, monkeypatch, tmp_path):
    rec = record(hub=publish(hub_server, ours(tmp_path)))
    path = resolve(rec, progress=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub_server.clear_log()
    assert resolve(rec, progress=False) == path
    assert hub_server.requests == []


def test_hub_offline_without_cache(hub_server, monkeypatch, tmp_path):
    rec = record(hub=publish(hub_server, ours(tmp_path)))
    monkeypatch.setenv("RESTOREKIT_OFFLINE", "1")
    hub_server.clear_log()
    with pytest.raises(WeightsNotAvailableError) as info:
        resolve(rec, progress=False)
    message = str(info.value)
    assert f"restorekit download {rec.name}" in message and "downloads are disabled" in message
    assert "models--org--tiny" in message and "weights=PATH" in message
    assert hub_server.requests == []


# --------------------------------------------------------------------------------------------------- upstream


@pytest.mark.parametrize("pin", ["git_blob_sha1", "sha256"])
def test_upstream_download_converts_once(file_server, isolated_cache, pin):
    data = authors_checkpoint(seed=9)
    url = file_server.add("/MIVRC/model/tiny_x1.pth", data)
    digest = blob_sha1(data) if pin == "git_blob_sha1" else sha256(data)
    rec = record(upstream=UrlSource(url=url, format="torch", **{pin: digest}))
    path = resolve(rec, progress=True)
    assert path == isolated_cache.restorekit / "converted" / f"{rec.name}-{digest[:16]}.safetensors"
    sd, header = read_weights(path)
    assert same_state(sd, state(9))
    assert header == {"format_version": 1, "arch": ARCH, "config": FULL_CONFIG, "name": rec.name}
    assert path.with_name(path.name + ".sha256").read_text().split()[0] == sha256_file(path)
    assert list((isolated_cache.restorekit / "downloads").iterdir()) == []  # the raw download is gone

    file_server.clear_log()
    assert resolve(rec, progress=False) == path
    assert file_server.requests == []


def test_upstream_checksum_mismatch(file_server, isolated_cache):
    data = authors_checkpoint()
    url = file_server.add("/x1.pth", data)
    file_server.corrupt("/x1.pth", authors_checkpoint(seed=1))
    rec = record(upstream=UrlSource(url=url, git_blob_sha1=blob_sha1(data)))
    with pytest.raises(ChecksumError) as info:
        resolve(rec, progress=False)
    message = str(info.value)
    assert url in message and blob_sha1(data) in message and blob_sha1(authors_checkpoint(seed=1)) in message
    assert list((isolated_cache.restorekit / "downloads").iterdir()) == []
    assert not (isolated_cache.restorekit / "converted").exists()


@pytest.mark.parametrize("failure", ["truncated", "500", "404"])
def test_upstream_network_failures(file_server, isolated_cache, no_backoff, failure):
    data = authors_checkpoint()
    url = file_server.add("/x1.pth", data)
    if failure == "truncated":
        file_server.truncate_next(len(data) // 8, times=100)  # every attempt is cut short (one cut is resumed)
    elif failure == "500":
        file_server.fail_with(500, times=100)
    else:
        url = file_server.url_for("/elsewhere.pth")
    rec = record(upstream=UrlSource(url=url, git_blob_sha1=blob_sha1(data)))
    with pytest.raises(WeightsNotAvailableError) as info:
        resolve(rec, progress=False)
    message = str(info.value)
    assert f"upstream {url}" in message
    assert {"truncated": "truncated download", "500": "HTTP 500", "404": "HTTP 404"}[failure] in message
    assert ("giving up" in message) == (failure != "404"), "only transient failures are retried"
    assert list((isolated_cache.restorekit / "downloads").iterdir()) == []


def test_upstream_damaged_conversion_is_refetched(file_server):
    data = authors_checkpoint()
    rec = record(upstream=UrlSource(url=file_server.add("/x1.pth", data), sha256=sha256(data)))
    path = resolve(rec, progress=False)
    path.write_bytes(path.read_bytes()[:-4] + b"oops")
    file_server.clear_log()
    assert resolve(rec, progress=False) == path
    assert file_server.requests == [("GET", "/x1.pth")]
    assert same_state(read_weights(path)[0], state())


def test_upstream_offline(file_server, monkeypatch):
    data = authors_checkpoint()
    rec = record(upstream=UrlSource(url=file_server.add("/x1.pth", data), sha256=sha256(data)))
    monkeypatch.setenv("HF_HUB_OFFLINE", "yes")
    with pytest.raises(WeightsNotAvailableError) as info:
        resolve(rec, progress=False)
    assert f"restorekit download {rec.name}" in str(info.value) and "converted" in str(info.value)
    assert file_server.requests == []

    monkeypatch.delenv("HF_HUB_OFFLINE")
    path = resolve(rec, progress=False)
    monkeypatch.setenv("RESTOREKIT_OFFLINE", "1")
    file_server.clear_log()
    assert resolve(rec, progress=False) == path
    assert file_server.requests == []


def test_checkpoint_formats_are_a_table(tmp_path):
    from restorekit.convert import FORMATS, detect_format

    assert detect_format("a/b.caffemodel") == "caffe" and detect_format("x.PDPARAMS") == "paddle"
    assert detect_format("m.pth") == "torch" and detect_format("m.safetensors") == "safetensors"
    assert detect_format("no_suffix") == "torch" and detect_format("m.pth", "caffe") == "caffe"
    assert {"torch", "safetensors", "caffe", "paddle"} <= set(FORMATS)
    with pytest.raises(ConversionError, match="unknown checkpoint format 'onnx'"):
        detect_format("m.onnx", "onnx")
    src = tmp_path / "m.bin"
    src.write_bytes(b"not a checkpoint")
    with pytest.raises(ConversionError, match="unknown checkpoint format"):
        convert(src, tmp_path / "o.safetensors", arch="msrn", format="onnx")
