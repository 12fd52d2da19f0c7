"""Downloads against the local hub and file servers (tests/servers.py), under every fault a network has.

Each fault is followed by a good download from the same server, to prove the fault left nothing behind
(no poisoned cache entry, no stuck state). Waits are shortened by the documented settings
(RESTOREKIT_TIMEOUT, RESTOREKIT_DEADLINE, RESTOREKIT_RETRY_WAIT), never by mocking: every byte crosses a
real socket.
"""

from __future__ import annotations

import hashlib
import io
import socket
import time

import pytest
import torch

from restorekit import registry
from restorekit.cli import main
from restorekit.errors import ChecksumError, WeightsNotAvailableError
from restorekit.registry import HubSource, UrlSource, WeightRecord
from restorekit.weights import read_weights, resolve, save_weights

TIMEOUT = 0.4  # seconds of silence before a wait gives up, in these tests


@pytest.fixture(autouse=True)
def quick_waits(monkeypatch):
    monkeypatch.setenv("RESTOREKIT_TIMEOUT", str(TIMEOUT))
    monkeypatch.setenv("RESTOREKIT_RETRY_WAIT", "0.02")
    monkeypatch.setenv("RESTOREKIT_RETRIES", "3")


def _weights(tmp_path, seed: int = 0) -> bytes:
    from restorekit.archs.spatial_rnn import SPEC, SpatialRNN

    config = {**SPEC.default_config, **SPEC.tiny_config}
    torch.manual_seed(seed)
    path = tmp_path / f"w{seed}.safetensors"
    save_weights(path, SpatialRNN(**config).state_dict(), arch="spatial_rnn", config=config)
    data = path.read_bytes()
    assert len(data) > 2000, "big enough to cut in the middle"
    return data


def _record(hub: HubSource | None = None, upstream: UrlSource | None = None) -> WeightRecord:
    return WeightRecord(
        arch="spatial_rnn", tag="corpus_dl", task="denoise", description="download corpus", hub=hub, upstream=upstream
    )


@pytest.fixture
def published(hub_server, tmp_path):
    data = _weights(tmp_path)
    commit = hub_server.add_file("org/corpus", "w.safetensors", data)
    hub = HubSource(
        "org/corpus", "w.safetensors", revision=commit, sha256=hashlib.sha256(data).hexdigest(), size=len(data)
    )
    return _record(hub), data


def _good_download(record: WeightRecord, data: bytes, server) -> None:
    server.reset()
    assert resolve(record, progress=False).read_bytes() == data
    assert read_weights(resolve(record, progress=False))[1]["arch"] == "spatial_rnn"


def _cached_files(isolated_cache) -> list:
    root = isolated_cache.hf_hub
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


# ------------------------------------------------------------------ faults that a retry cures


@pytest.mark.parametrize(
    "fault, requests",
    [
        (lambda s: s.fail_with(500), 2),
        (lambda s: s.fail_with(503, times=2), 3),
        (lambda s: s.fail_with(429), 2),
        (lambda s: s.truncate_next(1000), 2),
        (lambda s: s.reset_next(), 2),
        (lambda s: s.reset_next(after_bytes=1500), 2),
        (lambda s: s.stall_next(5), 2),
        (lambda s: s.stall_next(5, after_bytes=800), 2),
    ],
    ids=["500 once", "503 twice", "429", "cut body", "reset", "reset mid-body", "silent", "silent mid-body"],
)
def test_transient_faults_are_retried_logged_and_cured(published, hub_server, caplog, fault, requests):
    record, data = published
    fault(hub_server)
    t0 = time.monotonic()
    with caplog.at_level("WARNING", logger="restorekit"):
        assert resolve(record, progress=False).read_bytes() == data
    assert time.monotonic() - t0 < 10 * TIMEOUT + 2
    assert len(hub_server.requests) == requests
    assert caplog.text.count("retrying in") == requests - 1 and "hub org/corpus/w.safetensors" in caplog.text
    _good_download(record, data, hub_server)


def test_a_cut_body_resumes_where_it_stopped(published, hub_server):
    record, data = published
    hub_server.truncate_next(1234)
    assert resolve(record, progress=False).read_bytes() == data
    assert hub_server.request_headers[1]["range"] == "bytes=1234-"


# ------------------------------------------------------------------ faults that persist: a bounded, clear failure


@pytest.mark.parametrize(
    "fault, words",
    [
        (lambda s: s.fail_with(500, times=10), "HTTP 500"),
        (lambda s: s.truncate_next(500, times=10), "truncated download"),
        (lambda s: s.reset_next(times=10), "reset the connection"),
        (lambda s: s.stall_next(30, times=10), f"no data for {TIMEOUT:g} s (the server stalled)"),
    ],
    ids=["500 always", "cut always", "reset always", "silent always"],
)
def test_persistent_faults_give_up_after_the_retries_and_name_the_endpoint(
    published, hub_server, isolated_cache, fault, words
):
    record, data = published
    fault(hub_server)
    t0 = time.monotonic()
    with pytest.raises(WeightsNotAvailableError) as info:
        resolve(record, progress=False)
    elapsed = time.monotonic() - t0
    message = str(info.value)
    assert words in message and "giving up" in message and hub_server.url in message, message
    assert len(hub_server.requests) == 4, "the first try and three retries"
    assert elapsed < 4 * TIMEOUT + 3, f"bounded: {elapsed:.1f} s"
    assert not [p for p in _cached_files(isolated_cache) if not p.name.endswith(".lock")], "nothing half-cached"
    _good_download(record, data, hub_server)


def test_a_server_that_trickles_forever_meets_the_total_deadline(published, hub_server, monkeypatch):
    record, data = published
    monkeypatch.setenv("RESTOREKIT_DEADLINE", "1.5")
    hub_server.trickle_next(0.1, piece=16)  # never silent for TIMEOUT, never done
    t0 = time.monotonic()
    with pytest.raises(WeightsNotAvailableError, match=r"gave up after 1\.5 s \(RESTOREKIT_DEADLINE\)"):
        resolve(record, progress=False)
    assert time.monotonic() - t0 < 1.5 + TIMEOUT + 1
    _good_download(record, data, hub_server)


def test_a_wrong_digest_is_final_never_retried_and_never_cached(published, hub_server, isolated_cache, tmp_path):
    record, data = published
    hub_server.corrupt("org/corpus", "w.safetensors", _weights(tmp_path, seed=1))
    with pytest.raises(ChecksumError, match=r"does not match the digest pinned .* nothing entered the cache"):
        resolve(record, progress=False)
    assert len(hub_server.requests) == 1, "a digest mismatch is not a network fault: no retry"
    assert _cached_files(isolated_cache) == []
    _good_download(record, data, hub_server)


def test_a_missing_file_is_a_404_named_once(published, hub_server):
    record, data = published
    missing = _record(HubSource("org/corpus", "absent.safetensors", record.hub.revision, record.hub.sha256))
    with pytest.raises(WeightsNotAvailableError, match=r"HTTP 404 .*\(EntryNotFound\)"):
        resolve(missing, progress=False)
    assert len(hub_server.requests) == 1, "a 404 is not retried"
    _good_download(record, data, hub_server)


def test_offline_makes_no_request_and_says_what_to_do(published, hub_server, monkeypatch):
    record, data = published
    monkeypatch.setenv("RESTOREKIT_OFFLINE", "1")
    with pytest.raises(WeightsNotAvailableError, match="downloads are disabled") as info:
        resolve(record, progress=False)
    assert f"restorekit download {record.name}" in str(info.value) and hub_server.requests == []
    monkeypatch.delenv("RESTOREKIT_OFFLINE")
    _good_download(record, data, hub_server)


def test_nothing_listening_fails_at_once_without_retries(tmp_path, monkeypatch, hub_server, published):
    with socket.socket() as s:  # a port that was free a moment ago: connections are refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    record, data = published
    t0 = time.monotonic()
    with pytest.raises(WeightsNotAvailableError, match=f"127.0.0.1:{port}"):
        resolve(record, progress=False)
    assert time.monotonic() - t0 < 2, "refused connections are not waited on"
    monkeypatch.setenv("HF_ENDPOINT", hub_server.url)
    _good_download(record, data, hub_server)


# ------------------------------------------------------------------ upstream URLs: the same policy


def _authors_file(seed: int = 3) -> bytes:
    from restorekit.archs.spatial_rnn import SPEC, SpatialRNN

    torch.manual_seed(seed)
    buf = io.BytesIO()
    torch.save({"state_dict": SpatialRNN(**SPEC.default_config).state_dict()}, buf)
    return buf.getvalue()


@pytest.mark.parametrize(
    "fault",
    [lambda s: s.fail_with(502), lambda s: s.stall_next(5), lambda s: s.reset_next(after_bytes=4000)],
    ids=["502", "silent", "reset mid-body"],
)
def test_upstream_downloads_are_retried_too(file_server, fault):
    data = _authors_file()
    url = file_server.add("/authors/model.pth", data)
    record = _record(upstream=UrlSource(url=url, sha256=hashlib.sha256(data).hexdigest()))
    fault(file_server)
    path = resolve(record, progress=False)
    assert read_weights(path)[1]["arch"] == "spatial_rnn" and len(file_server.requests) == 2


def test_a_stalled_upstream_is_bounded_and_named(file_server):
    data = _authors_file()
    url = file_server.add("/authors/model.pth", data)
    record = _record(upstream=UrlSource(url=url, sha256=hashlib.sha256(data).hexdigest()))
    file_server.stall_next(30, times=10)
    t0 = time.monotonic()
    with pytest.raises(WeightsNotAvailableError, match=f"upstream {url}: .*no data for {TIMEOUT:g} s"):
        resolve(record, progress=False)
    assert time.monotonic() - t0 < 4 * TIMEOUT + 3
    file_server.reset()
    assert read_weights(resolve(record, progress=False))[1]["arch"] == "spatial_rnn"


# ------------------------------------------------------------------ the command


def test_restorekit_download_against_a_silent_hub_ends_with_one_line(published, hub_server, capsys):
    record, data = published
    hub_server.stall_next(30, times=10)
    with registry.temporary(None, record):
        t0 = time.monotonic()
        code = main(["download", record.name, "--no-progress"])
        elapsed = time.monotonic() - t0
        err = capsys.readouterr().err
        assert code == 1 and elapsed < 4 * TIMEOUT + 3, elapsed
        assert "Traceback" not in err and hub_server.url in err and "the server stalled" in err
        hub_server.reset()
        assert main(["download", record.name, "--no-progress"]) == 0
        assert resolve(record, progress=False).read_bytes() == data
