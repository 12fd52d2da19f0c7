"""DistributedDataParallel on CPU: two gloo processes under torchrun train like one process on both shards."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fit_args(data: Path, out: Path, batch: int, tiny: dict) -> list[str]:
    tiny = json.dumps(tiny)
    # One plain SGD step at lr 1: the weight change is minus the (averaged) gradient.
    return [
        "-m", "restorekit.train", "fit", "--preset", "msrn.sr_x2", "--data", str(data), "--out", str(out),
        "--model-config", tiny, "--patch-size", "8", "--batch-size", str(batch), "--steps", "1", "--workers", "0",
        "--optimizer", "sgd", "--momentum", "0", "--weight-decay", "0", "--lr", "1", "--schedule", "constant",
        "--warmup-steps", "0", "--grad-clip", "0", "--quiet",
        "--no-bf16", "--no-channels-last",  # fp32: bf16's rounding depends on how the batch is split
    ]  # fmt: skip


def _run(cmd: list[str]) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "RESTOREKIT_SCAN_BACKEND": "reference"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def _weights(out: Path) -> dict:
    return torch.load(out / "checkpoints" / "last.pt", weights_only=True)["model"]


@pytest.mark.slow
def test_two_gloo_processes_match_one_process_on_the_union_of_their_shards(tmp_path, image_folder, tiny_config):
    data = image_folder("clean", 6, (32, 32), kind="blocks")
    tiny = tiny_config("msrn")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2"]
    torchrun += ["--master_addr", "127.0.0.1", "--master_port", str(_free_port())]
    _run(torchrun + _fit_args(data, tmp_path / "ddp", batch=2, tiny=tiny))
    _run([sys.executable] + _fit_args(data, tmp_path / "one", batch=4, tiny=tiny))  # the same command, one process
    _run([sys.executable] + _fit_args(data, tmp_path / "half", batch=2, tiny=tiny))  # rank 0's shard alone
    ddp, one, half = _weights(tmp_path / "ddp"), _weights(tmp_path / "one"), _weights(tmp_path / "half")
    assert ddp.keys() == one.keys()
    for k in ddp:
        assert torch.allclose(ddp[k], one[k], atol=1e-5, rtol=1e-4), k
    assert any(not torch.allclose(ddp[k], half[k], atol=1e-5, rtol=1e-4) for k in ddp)  # both shards counted
    log = [json.loads(line) for line in (tmp_path / "ddp" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1]  # rank 0 alone logs
