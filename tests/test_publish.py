"""restorekit.train.publish: export a run folder, push it to the local hub server, load it back."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import constants as hf_constants

from restorekit import Restorer, registry
from restorekit.registry import HubSource, get_arch, get_record
from restorekit.train.cli import main
from restorekit.train.publish import (
    CHECKPOINT_FORMAT,
    ExportError,
    PushError,
    export_run,
    push_folder,
)
from restorekit.weights import build_model, load_model, read_weights, resolve, sha256_file

NAME = "memnet.denoise_blind"  # grey, BatchNorm buffers (an int64 counter among the float tensors)
REPO = "restorekit-test/memnet"
TOKEN = "hf_test_write_token"
METRICS = [{"dataset": "val", "metric": "psnr", "value": 27.5, "convention": "full_image"}]


def _tiny_config(name: str = NAME) -> dict:
    record, spec = get_record(name), get_arch(get_record(name).arch)
    return {**record.config, **spec.tiny_config}


def make_run(root: Path, *, ema: bool = True, step: int = 20, metrics: list | None = None, name: str = NAME) -> Path:
    """A run folder as restorekit-train writes it: config.json, log.jsonl, checkpoints/ (real files)."""
    record = get_record(name)
    config = _tiny_config(name)
    torch.manual_seed(0)
    model = build_model(record.arch, config).state_dict()
    # The EMA copy differs from the raw weights, so a test can tell which one was exported.
    ema_state = {k: (v + 0.25 if v.is_floating_point() else v.clone()) for k, v in model.items()} if ema else None
    train_config = {
        "model": name,
        "data": {"train": "photos/", "degrade": "noise:0-50", "patch": 31, "cache": True},
        "loss": "mse_multi",
        "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9},
        "batch_size": 4,
        "steps": step,
        "ema": 0.999 if ema else None,
    }
    ckpt = {
        "format": CHECKPOINT_FORMAT,
        "step": step,
        "arch": record.arch,
        "model_name": name,
        "config": config,
        "model": model,
        "ema": ema_state,
        "optimizer": {"state": {}, "param_groups": []},
        "scheduler": {"last_epoch": step},
        "rng": {"torch": torch.get_rng_state()},
        "train_config": train_config,
        "metrics": METRICS if metrics is None else metrics,
    }
    run = root / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps(train_config))
    log = [{"step": s, "loss": 1.0 / s, "lr": 0.1, "patches_per_s": 100.0} for s in range(1, step + 1)]
    log.append({"step": step, "val": {"psnr": 27.5}})
    (run / "log.jsonl").write_text("".join(json.dumps(e) + "\n" for e in log))
    torch.save(ckpt, run / "checkpoints" / f"step_{step:08d}.pt")
    torch.save(ckpt, run / "checkpoints" / "last.pt")
    return run


@pytest.fixture
def run(tmp_path: Path) -> Path:
    return make_run(tmp_path)


@pytest.fixture
def upload_hub(hub_server, monkeypatch):
    """The local hub server with a write token; huggingface_hub on its LFS path (the server has no Xet storage)."""
    hub_server.token = TOKEN
    monkeypatch.setattr(hf_constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    return hub_server


def _image() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.random((12, 10), dtype=np.float32)


# --------------------------------------------------------------------------------------------------- export


def test_export_writes_fp16_weights_card_and_record(run, tmp_path):
    out = tmp_path / "release"
    result = export_run(run, out)
    assert result.source == "ema" and result.step == 20
    state, header = read_weights(result.weights)
    assert header["arch"] == "memnet" and header["name"] == NAME
    assert header["config"] == {**get_arch("memnet").default_config, **_tiny_config()}
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    for key, value in ckpt["ema"].items():
        if value.is_floating_point():
            assert state[key].dtype == torch.float16
            assert torch.equal(state[key], value.half())  # the EMA copy, rounded to fp16
        else:
            assert state[key].dtype == value.dtype and torch.equal(state[key], value)  # counters untouched

    assert result.sha256 == sha256_file(result.weights) and result.size == result.weights.stat().st_size
    text = result.record_py.read_text()
    assert f"sha256={result.sha256!r}" in text and f"size={result.size}" in text
    assert "HubSource(" in text and "BundledSource(" in text
    assert "Metric('val', 'psnr', 27.5, 'full_image', 'measured')" in text
    assert "repo_id='restorekit/memnet'" in text and "filename='memnet_denoise_blind.safetensors'" in text
    assert 'WeightRecord.named("memnet.denoise_blind", ...) in restorekit/archs/memnet.py' in text  # where it goes
    namespace: dict = {}
    exec(compile(text, "registry_record.py", "exec"), namespace)  # the record text is valid Python
    assert namespace["RECORD"]["hub"].sha256 == result.sha256 and namespace["BUNDLED"].size == result.size
    record = json.loads(result.record_json.read_text())
    assert record["hub"]["sha256"] == result.sha256 and record["hub"]["revision"] is None

    card = result.card.read_text()
    assert card.startswith("---\nlicense: mit\n")
    for needle in (
        "# memnet.denoise_blind",
        "20 (checkpoint `last.pt`)",
        "noise:0-50",  # the data description
        '**optimizer**: name="sgd"',
        "| val | psnr | 27.5 | `full_image` |",
        "full_image: channels as given",  # the convention spelled out
        "MIT (restorekit's own training",
        'Restorer("memnet.denoise_blind", weights="memnet_denoise_blind.safetensors")',
        result.sha256,
    ):
        assert needle in card, needle


def test_export_never_replaces_release_files_unasked(run, tmp_path, capsys):
    from restorekit.errors import OutputExistsError
    from restorekit.train.cli import main as train_main

    out = tmp_path / "release"
    first = export_run(run, out)
    card = first.card.read_text()
    first.card.write_text(card + "\nmy edits\n")
    with pytest.raises(OutputExistsError, match="already exist; pass overwrite=True \\(--overwrite\\)"):
        export_run(run, out)
    assert first.card.read_text().endswith("my edits\n"), "nothing was written"
    assert train_main(["export", str(run), "-o", str(out)]) == 1  # restorekit's exit code for an error
    assert "--overwrite" in capsys.readouterr().err
    assert train_main(["export", str(run), "-o", str(out), "--overwrite"]) == 0
    assert first.card.read_text() == card and not list(out.glob(".*"))


def test_export_model_weights_and_missing_ema(tmp_path, caplog):
    run = make_run(tmp_path)
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    result = export_run(run, tmp_path / "raw", weights="model", dtype="float32")
    state, _ = read_weights(result.weights)
    assert result.source == "model"
    assert all(torch.equal(state[k], v) for k, v in ckpt["model"].items())  # fp32: exact

    no_ema = make_run(tmp_path / "b", ema=False)
    result = export_run(no_ema, tmp_path / "b_out")
    assert result.source == "model" and "no EMA weights" in caplog.text


def test_export_by_step_and_errors(run, tmp_path):
    assert export_run(run, tmp_path / "o", checkpoint=20).step == 20
    with pytest.raises(ExportError, match="step_00000007.pt does not exist.*step_00000020.pt"):
        export_run(run, tmp_path / "o", checkpoint=7)
    with pytest.raises(ExportError, match="run folder .* does not exist"):
        export_run(tmp_path / "nope", tmp_path / "o")
    with pytest.raises(ExportError, match="'ema' or 'model'"):
        export_run(run, tmp_path / "o", weights="best")
    with pytest.raises(ExportError, match="dtype must be one of float32, float16, bfloat16, not 'fp16'"):
        export_run(run, tmp_path / "o", dtype="fp16")  # the run options' aliases are not export names

    with pytest.raises(ExportError, match="'memnet.nope', which is not a registered model.*--name"):
        export_run(run, tmp_path / "o", name="memnet.nope")
    with pytest.raises(ExportError, match="holds a 'memnet' network, but msrn.sr_x2 is a 'msrn' model"):
        export_run(run, tmp_path / "o", name="msrn.sr_x2")

    # A foreign checkpoint (an authors' state dict) and a corrupt file are refused with what to do instead.
    foreign = run / "checkpoints" / "foreign.pt"
    torch.save(build_model("memnet", _tiny_config()).state_dict(), foreign)
    with pytest.raises(ExportError, match="not a restorekit-train checkpoint.*restorekit convert"):
        export_run(run, tmp_path / "o", checkpoint=foreign)
    corrupt = run / "checkpoints" / "corrupt.pt"
    corrupt.write_bytes((run / "checkpoints" / "last.pt").read_bytes()[:300])
    with pytest.raises(ExportError, match="truncated or corrupt"):
        export_run(run, tmp_path / "o", checkpoint=corrupt)

    # Weights that do not fit the network the checkpoint names: refused before anything is written.
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    ckpt["config"] = {**ckpt["config"], "channels": 6}
    torch.save(ckpt, run / "checkpoints" / "misfit.pt")
    with pytest.raises(ExportError, match="do not fit.*shape mismatches"):
        export_run(run, tmp_path / "misfit", checkpoint="misfit.pt")
    assert not (tmp_path / "misfit").exists()

    # fp16 cannot hold a weight of 1e6: say so rather than write infinities.
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    key = next(k for k, v in ckpt["ema"].items() if v.is_floating_point())
    ckpt["ema"][key] = ckpt["ema"][key] * 0 + 1e6
    torch.save(ckpt, run / "checkpoints" / "huge.pt")
    with pytest.raises(ExportError, match="not finite in float16.*--dtype float32"):
        export_run(run, tmp_path / "o", checkpoint="huge.pt")


def test_export_refuses_a_scale_the_record_does_not_have(tmp_path):
    run = make_run(tmp_path, name="msrn.sr_x2")
    assert export_run(run, tmp_path / "ok").filename == "msrn_sr_x2.safetensors"
    with pytest.raises(ExportError, match="trained with {'scale': 2}, but msrn.sr_x4 is a x4 model"):
        export_run(run, tmp_path / "o", name="msrn.sr_x4")


def test_export_unwraps_ddp_and_averaged_model_keys(tmp_path):
    run = make_run(tmp_path)
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    ema = ckpt["ema"]
    # torch.optim.swa_utils.AveragedModel's state dict: the network under "module." and a step counter.
    ckpt["ema"] = {**{f"module.{k}": v for k, v in ema.items()}, "n_averaged": torch.tensor(20)}
    torch.save(ckpt, run / "checkpoints" / "last.pt")
    state, _ = read_weights(export_run(run, tmp_path / "o").weights)
    assert set(state) == set(ema) and all(
        torch.equal(state[k], v.half() if v.is_floating_point() else v) for k, v in ema.items()
    )


def test_exported_fp16_file_round_trips_through_the_restorer(run, tmp_path):
    result = export_run(run, tmp_path / "release")
    x = _image()
    got = Restorer(NAME, weights=result.weights, device="cpu", tile=None).run(x)
    # The reference: the fp32 network holding the fp16-rounded EMA weights, and the unrounded one.
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    rounded = tmp_path / "rounded.safetensors"
    from restorekit.weights import save_weights

    config = {**get_arch("memnet").default_config, **ckpt["config"]}
    rounded_state = {k: v.half().float() if v.is_floating_point() else v for k, v in ckpt["ema"].items()}
    save_weights(rounded, rounded_state, arch="memnet", config=config, name=NAME)
    want = Restorer(NAME, weights=rounded, device="cpu", tile=None).run(x)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    exact = tmp_path / "exact.safetensors"
    save_weights(exact, ckpt["ema"], arch="memnet", config=config, name=NAME)
    np.testing.assert_allclose(got, Restorer(NAME, weights=exact, device="cpu", tile=None).run(x), atol=2e-2)
    # The loaded network is fp32 (the file's fp16 values promoted), built from the file's header alone too.
    net = load_model(result.weights)
    assert all(p.dtype == torch.float32 for p in net.parameters())


def test_export_measures_metrics_with_evaluate(run, tmp_path):
    from PIL import Image

    data = tmp_path / "clean"
    data.mkdir()
    rng = np.random.default_rng(1)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(data / f"{i}.png")
    result = export_run(run, tmp_path / "release", eval_data=data, eval_degradation="noise:25")
    from restorekit.evaluate import evaluate

    direct = evaluate(NAME, data, weights=result.weights, degradation="noise:25", device="cpu", progress=False)
    assert result.metrics == direct.as_metrics("clean")
    assert [m.convention for m in result.metrics] == ["full_image", "full_image"]
    card = result.card.read_text()
    assert (
        "measured on the exported float16 file" in card
        and f"| clean | psnr | {direct.as_metrics('clean')[0].value:g} |" in card
    )


# --------------------------------------------------------------------------------------------------- push


def test_push_then_download_through_restorekit(run, tmp_path, upload_hub):
    result = export_run(run, tmp_path / "release", repo_id=REPO)
    commit = push_folder(result.folder, REPO, commit_message="export step 20")
    files = upload_hub.files(REPO, commit)
    assert set(files) == {".gitattributes", "README.md", "registry_record.py", "registry_record.json", result.filename}
    assert upload_hub.commit_message(commit) == "export step 20"
    methods = [(m, p.split("/")[1]) for m, p in upload_hub.requests]
    assert ("PUT", "lfs-upload") in methods  # the weights went by LFS, and their sha256 was checked on arrival
    assert all(
        h.get("authorization") == f"Bearer {TOKEN}"
        for (m, _), h in zip(upload_hub.requests, upload_hub.request_headers)
        if m == "POST"
    )

    # Published: a record pinned to the commit and digest resolves through restorekit's normal hub path.
    base = get_record(NAME)
    hub = HubSource(REPO, result.filename, revision=commit, sha256=result.sha256, size=result.size)
    published = dataclasses.replace(base, tag="published_test", default=False, hub=hub, config=_tiny_config())
    with registry.temporary(None, published):
        path = resolve(published, progress=False)
        assert path.read_bytes() == result.weights.read_bytes()
        x = _image()
        got = Restorer(published.name, device="cpu", tile=None).run(x)
        want = Restorer(NAME, weights=result.weights, device="cpu", tile=None).run(x)
        np.testing.assert_array_equal(got, want)

    # A second push of a changed folder is a new commit; the old commit still serves the old bytes.
    (result.folder / "README.md").write_text(result.card.read_text() + "\nupdated\n")
    second = push_folder(result.folder, REPO)
    assert second != commit
    assert upload_hub.files(REPO, second)["README.md"].endswith(b"updated\n")
    assert not upload_hub.files(REPO, commit)["README.md"].endswith(b"updated\n")


def test_push_with_a_wrong_token_is_refused(tmp_path, upload_hub, monkeypatch):
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "notes.txt").write_text("hello\n")
    monkeypatch.setenv("HF_TOKEN", "wrong")
    with pytest.raises(PushError, match="HTTP 401.*HF_TOKEN"):
        push_folder(folder, REPO)
    assert upload_hub.files(REPO) == {}
    with pytest.raises(PushError, match="not a folder with files"):
        push_folder(tmp_path / "missing", REPO)
    with pytest.raises(PushError, match="namespace/name"):
        push_folder(folder, "no-namespace")


def test_push_through_xet_to_a_server_without_it_says_what_to_do(tmp_path, upload_hub, monkeypatch):
    pytest.importorskip("hf_xet")  # with hf_xet installed, its path is huggingface_hub's default
    monkeypatch.setattr(hf_constants, "HF_HUB_DISABLE_XET", False)
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "w.safetensors").write_bytes(os.urandom(2048))
    with pytest.raises(PushError, match="HF_HUB_DISABLE_XET=1"):
        push_folder(folder, REPO)
    assert ("GET", f"/api/models/{REPO}/xet-write-token/main") in upload_hub.requests


def test_server_refuses_lfs_bytes_that_do_not_match(upload_hub):
    import hashlib

    import requests

    data = b"x" * 1000
    oid = hashlib.sha256(data).hexdigest()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    requests.post(
        f"{upload_hub.url}/api/repos/create",
        json={"name": "memnet", "organization": "restorekit-test"},
        headers=auth,
        timeout=10,
    ).raise_for_status()
    batch = requests.post(
        f"{upload_hub.url}/{REPO}.git/info/lfs/objects/batch",
        json={"operation": "upload", "transfers": ["basic"], "objects": [{"oid": oid, "size": 1000}]},
        headers=auth,
        timeout=10,
    ).json()
    href = batch["objects"][0]["actions"]["upload"]["href"]
    assert requests.put(href, data=b"y" * 1000, timeout=10).status_code == 400
    commit = {"key": "lfsFile", "value": {"path": "w.bin", "algo": "sha256", "oid": oid, "size": 1000}}
    body = json.dumps({"key": "header", "value": {"summary": "s"}}) + "\n" + json.dumps(commit) + "\n"
    response = requests.post(f"{upload_hub.url}/api/models/{REPO}/commit/main", data=body, headers=auth, timeout=10)
    assert response.status_code == 422  # the object never arrived, so no commit may point at it
    assert requests.put(href, data=data, timeout=10).status_code == 200
    response = requests.post(f"{upload_hub.url}/api/models/{REPO}/commit/main", data=body, headers=auth, timeout=10)
    assert response.status_code == 200 and upload_hub.files(REPO)["w.bin"] == data


# --------------------------------------------------------------------------------------------------- CLI


@pytest.mark.slow  # pushes from a process
def test_main_export_and_push_end_to_end(run, tmp_path, upload_hub, capsys):
    out = tmp_path / "release"
    assert main(["export", str(run), "-o", str(out), "--repo-id", REPO]) == 0
    printed = capsys.readouterr().out
    digest = sha256_file(out / "memnet_denoise_blind.safetensors")
    assert f"sha256={digest!r}" in printed and "Metric('val', 'psnr', 27.5" in printed
    assert main(["export", str(tmp_path / "missing"), "-o", str(out)]) == 1
    assert "run folder" in capsys.readouterr().err

    # push in a fresh process, as a user runs it: HF_ENDPOINT and HF_TOKEN from the environment.
    env = {**os.environ, "HF_ENDPOINT": upload_hub.url, "HF_TOKEN": TOKEN, "HF_HUB_DISABLE_XET": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")])
    env["HF_HUB_DISABLE_TELEMETRY"] = "1"
    code = "import sys; from restorekit.train.cli import main; sys.exit(main(sys.argv[1:]))"
    done = subprocess.run(
        [sys.executable, "-c", code, "push", str(out), REPO, "-m", "cli push"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    commit = done.stdout.split("at commit ")[1].split()[0]
    assert f"revision={commit!r}, sha256={digest!r}" in done.stdout
    assert (
        upload_hub.files(REPO, commit)["memnet_denoise_blind.safetensors"]
        == (out / "memnet_denoise_blind.safetensors").read_bytes()
    )

    env["HF_TOKEN"] = "wrong"
    done = subprocess.run(
        [sys.executable, "-c", code, "push", str(out), REPO], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1 and "HTTP 401" in done.stderr and "Traceback" not in done.stderr
