"""GPT-2 training across two localhost processes (gloo, 2 virtual CPU devices each)
against one process with 4 devices: the same losses, a resume after both are
killed, FSDP and gradient accumulation across the processes, each process reading
only its own rows of every batch. Slow and multi-process: run with
`pytest -m multiprocess`."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]
FLAGS = [
  "--config=configs/gpt2.py:runlocal,steps=6",
  "--config.log_every=1",
  "--config.eval_every=3",
  "--config.checkpoint_every=3",
]


def _env(devices: int) -> dict:
  return dict(
    os.environ,
    PYTHONPATH=str(REPO),
    JAX_PLATFORMS="cpu",
    OMP_NUM_THREADS="1",
    JAX_NUM_CPU_DEVICES=str(devices),
  )


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _two(workdir: Path, extra=()) -> list[subprocess.Popen]:
  port = _free_port()
  return [
    subprocess.Popen(
      [sys.executable, "train.py", *FLAGS, *extra, f"--workdir={workdir}"]
      + [
        f"--config.distributed.coordinator_address=localhost:{port}",
        "--config.distributed.num_processes=2",
        f"--config.distributed.process_id={p}",
        "--config.distributed.initialization_timeout=60",
        "--config.distributed.peer_timeout=60",
      ],
      cwd=REPO,
      env=_env(2),
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
    )
    for p in range(2)
  ]


def _wait(procs, timeout=300) -> list[str]:
  outs = []
  for p in procs:
    out, _ = p.communicate(timeout=timeout)
    assert p.returncode == 0, out[-3000:]
    outs.append(out)
  return outs


def _read_own_rows(outs: list[str]) -> None:
  """Per-host data: each process read only its block of every global batch's rows (the losses
  equal to the one-process run's show the blocks together are that run's batches)."""
  for p, out in enumerate(outs):
    assert f"Process {p} of 2 reads its block {p} of 2 of every global batch's rows" in out


def _one(workdir: Path, extra=()) -> None:
  r = subprocess.run(
    [sys.executable, "train.py", *FLAGS, *extra, f"--workdir={workdir}"],
    cwd=REPO,
    env=_env(4),
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert r.returncode == 0, r.stderr[-3000:]


def _losses(workdir: Path) -> tuple[np.ndarray, dict]:
  rows = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
  train = np.array([r["train_loss"] for r in rows if "train_loss" in r])
  return train, json.loads((workdir / "summary.json").read_text())["final_val_loss"]


def _close(a: Path, b: Path) -> None:
  train_a, val_a = _losses(a)
  train_b, val_b = _losses(b)
  assert len(train_a) == len(train_b) == 6
  np.testing.assert_allclose(train_a, train_b, rtol=0, atol=2e-5)
  for k in val_a:
    np.testing.assert_allclose(val_a[k], val_b[k], rtol=0, atol=2e-5)


def test_two_processes_equal_one_and_resume_after_both_are_killed(tmp_path):
  _one(tmp_path / "one")
  _read_own_rows(_wait(_two(tmp_path / "two")))
  _close(tmp_path / "one", tmp_path / "two")
  summary = json.loads((tmp_path / "two" / "summary.json").read_text())
  assert summary["num_devices"] == 4

  # Killed hard after the step-2 checkpoint: the same command on both resumes.
  every = ["--config.checkpoint_every=1"]  # cadence only: the same trajectory
  procs = _two(tmp_path / "killed", every)
  ckpt = tmp_path / "killed" / "checkpoints" / "2"
  deadline = time.time() + 240
  while not (ckpt.is_dir() and any(ckpt.iterdir())) and time.time() < deadline:
    time.sleep(0.2)
  time.sleep(1.0)  # let the asynchronous save finish its rename
  for p in procs:
    p.send_signal(signal.SIGKILL)
    p.communicate(timeout=60)
  assert ckpt.is_dir() and not (tmp_path / "killed" / "summary.json").exists()
  resumed = _two(tmp_path / "killed", every)
  outs = [p.communicate(timeout=300)[0] for p in resumed]
  assert all(p.returncode == 0 for p in resumed), outs[0][-3000:]
  assert all("Resumed" in out for out in outs)
  _close(tmp_path / "one", tmp_path / "killed")


def test_fsdp_and_microbatches_across_the_two_processes(tmp_path):
  # Two microbatches: each process reads its block of each (data.text_pipeline's layout).
  mesh = ["--config.mesh.data=1", "--config.mesh.fsdp=4", "--config.grad_accum_steps=2"]
  _one(tmp_path / "one", mesh)
  _read_own_rows(_wait(_two(tmp_path / "two", mesh)))
  _close(tmp_path / "one", tmp_path / "two")
