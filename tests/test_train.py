"""train.py end to end: convergence, many seeds, resume after SIGKILL/SIGTERM, NaN, configs."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from absl import logging

import training
from configs.relu2 import get_config
from data import synthetic
from tests.config_overrides import config_with, unsafe_config_with
from training import config_checks
from training import workdir as wd

logging.set_verbosity(logging.WARNING)
REPO = Path(__file__).resolve().parents[1]


def _config(variant="runlocal", **fields):
  return config_with(get_config, variant, **fields)


def _tree_leaves(params):
  return [params[k][j] for k in sorted(params) for j in sorted(params[k])]


@pytest.mark.parametrize("optimizer,lr", [("adamw", 0.03), ("lion", 0.003), ("muon", 0.05)])
def test_reaches_near_zero_train_loss(tmp_path, optimizer, lr):
  config = _config(
    f"runlocal,optimizer={optimizer},steps=600",
    optimizer__learning_rate=lr,
    optimizer__schedule="warmup_cosine",
    optimizer__warmup_steps=10,
    checkpoint_every=600,
    log_every=100,
  )
  summary = training.run(config, tmp_path)
  d = config.data
  data = synthetic.make_task(
    d.task, d.input_dim, d.n_train, d.n_test, d.teacher_width, d.input_dist, d.label_noise, d.seed
  )
  zero_predictor_loss = 0.5 * float(np.mean(data.y_train_NxO**2))
  assert summary["final_train_loss"] < 1e-3
  assert summary["final_train_loss"] < 1e-2 * zero_predictor_loss
  # The workdir holds everything analysis needs.
  for name in (wd.CONFIG_FILE, wd.METRICS_FILE, wd.SUMMARY_FILE):
    assert (tmp_path / name).exists()
  assert list((tmp_path / wd.TENSORBOARD_DIR).glob("events.out.tfevents*"))
  rows = wd.read_metrics(tmp_path)
  assert [r["step"] for r in rows] == list(range(100, 601, 100))
  assert all(np.isfinite(r["train_loss"]) for r in rows)
  constraints = summary["constraints"]
  expected_k = {"adamw": "l1", "lion": "l1", "muon": "nuclear"}[optimizer]
  assert constraints["hidden/kernel"]["k"] == expected_k
  assert constraints["head/kernel"]["k"] == "l1"  # Muon leaves the head to AdamW.
  loaded_config, params = wd.load_params(tmp_path)
  assert loaded_config.optimizer.name == optimizer
  assert params["hidden"]["kernel"].shape == (1, d.input_dim, config.model.width)


def test_vmapped_seeds_equal_separate_runs(tmp_path):
  # Minibatches, so each seed's own data order matters; Muon, so the batched
  # Newton–Schulz is exercised too.
  common = dict(batch_size=16, checkpoint_every=1000, log_every=10)
  variant = "runlocal,optimizer=muon,steps=40"
  together = training.run(_config(variant, seed=5, num_seeds=3, **common), tmp_path / "together")
  _, params_S = wd.load_params(tmp_path / "together")
  assert together["seeds"] == [5, 6, 7]
  chunked = training.run(
    _config(variant, seed=5, num_seeds=3, seed_chunk_size=2, **common), tmp_path / "chunked"
  )
  _, params_chunked = wd.load_params(tmp_path / "chunked")
  for a, b in zip(_tree_leaves(params_S), _tree_leaves(params_chunked)):
    np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)
  np.testing.assert_allclose(
    together["final"]["train_loss"], chunked["final"]["train_loss"], rtol=1e-4
  )
  for i, seed in enumerate([5, 6, 7]):
    alone = training.run(
      _config(variant, seed=seed, num_seeds=1, **common), tmp_path / f"seed{seed}"
    )
    _, params_1 = wd.load_params(tmp_path / f"seed{seed}")
    for a, b in zip(_tree_leaves(params_S), _tree_leaves(params_1)):
      np.testing.assert_allclose(a[i], b[0], rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(
      together["final"]["train_loss"][i], alone["final"]["train_loss"][0], rtol=1e-4
    )
  # Different seeds are different networks (the test would pass trivially otherwise).
  assert not np.allclose(params_S["hidden"]["kernel"][0], params_S["hidden"]["kernel"][1])


# The run killed or preempted below; a minibatch run so the data order matters.
_RESUME_VARIANT = "runlocal,steps=3000"
_RESUME_FIELDS = dict(batch_size=16, checkpoint_every=100, log_every=100)
_RESUME_FLAGS = [f"--config=configs/relu2.py:{_RESUME_VARIANT}"] + [
  f"--config.{k}={v}" for k, v in _RESUME_FIELDS.items()
]


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
  """The uninterrupted run the resumed ones must equal bitwise."""
  workdir = tmp_path_factory.mktemp("reference")
  training.run(_config(_RESUME_VARIANT, **_RESUME_FIELDS), workdir)
  return workdir


def _start_training(workdir: Path, log: Path) -> subprocess.Popen:
  env = dict(os.environ, PYTHONPATH=str(REPO))
  return subprocess.Popen(
    [sys.executable, "train.py", *_RESUME_FLAGS, f"--workdir={workdir}"],
    cwd=REPO,
    env=env,
    stdout=log.open("w"),
    stderr=subprocess.STDOUT,
  )


def _wait_for_checkpoint(proc, workdir: Path, min_step: int, timeout=120.0) -> None:
  """Polls until a finalized checkpoint of step >= min_step exists."""
  deadline = time.time() + timeout
  while time.time() < deadline:
    steps = (
      [int(p.name) for p in (workdir / wd.CHECKPOINT_DIR).glob("*") if p.name.isdigit()]
      if (workdir / wd.CHECKPOINT_DIR).exists()
      else []
    )
    if steps and max(steps) >= min_step:
      return
    assert proc.poll() is None, "training ended before it could be interrupted"
    time.sleep(0.01)
  proc.kill()
  raise AssertionError("no checkpoint appeared in time")


def _assert_same_final_state(workdir: Path, reference: Path) -> None:
  _, params = wd.load_params(workdir)
  _, ref_params = wd.load_params(reference)
  for a, b in zip(_tree_leaves(params), _tree_leaves(ref_params)):
    assert a.dtype == b.dtype and np.array_equal(a, b)  # Bitwise.
  assert wd.read_metrics(workdir) == wd.read_metrics(reference) or [
    {k: v for k, v in r.items() if "steps_per_sec" not in k} for r in wd.read_metrics(workdir)
  ] == [
    {k: v for k, v in r.items() if "steps_per_sec" not in k} for r in wd.read_metrics(reference)
  ]


def test_sigkill_then_resume_is_bitwise_identical(tmp_path, reference_run):
  workdir = tmp_path / "run"
  proc = _start_training(workdir, tmp_path / "log.txt")
  _wait_for_checkpoint(proc, workdir, min_step=300)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert proc.returncode == -signal.SIGKILL
  assert not (workdir / wd.SUMMARY_FILE).exists()
  summary = training.run(_config(_RESUME_VARIANT, **_RESUME_FIELDS), workdir)
  assert 300 <= summary["resumed_from_step"] < 3000
  _assert_same_final_state(workdir, reference_run)


def test_sigterm_saves_and_exits_cleanly(tmp_path, reference_run):
  workdir = tmp_path / "run"
  proc = _start_training(workdir, tmp_path / "log.txt")
  _wait_for_checkpoint(proc, workdir, min_step=100)
  proc.send_signal(signal.SIGTERM)
  assert proc.wait(timeout=60) == 0, (tmp_path / "log.txt").read_text()[-2000:]
  assert "SIGTERM" in (tmp_path / "log.txt").read_text()
  saved = wd.checkpoint_steps(workdir)
  assert saved and saved[-1] < 3000
  assert not (workdir / wd.SUMMARY_FILE).exists()
  summary = training.run(_config(_RESUME_VARIANT, **_RESUME_FIELDS), workdir)
  assert summary["resumed_from_step"] == saved[-1]
  _assert_same_final_state(workdir, reference_run)


def test_nonfinite_loss_stops_without_overwriting_good_checkpoints(tmp_path):
  fields = dict(checkpoint_every=50, log_every=10)
  good = _config("runlocal,optimizer=sgd,steps=100", **fields)
  training.run(good, tmp_path)
  assert wd.checkpoint_steps(tmp_path) == [50, 100]
  bad = _config("runlocal,optimizer=sgd,steps=300", optimizer__learning_rate=1e4, **fields)
  with pytest.raises(training.NonFiniteError) as info:
    training.run(bad, tmp_path, override_config=True)
  message = str(info.value)
  assert "\n" not in message
  nan_step = int(message.split("at step ")[1].split()[0])
  assert 100 < nan_step <= 300
  steps = wd.checkpoint_steps(tmp_path)
  assert f"last good checkpoint is step {steps[-1]}" in message
  assert steps[-1] < nan_step
  for step in steps:  # Every checkpoint left is finite.
    _, params = wd.load_params(tmp_path, step)
    assert all(np.isfinite(leaf).all() for leaf in _tree_leaves(params))


@pytest.mark.parametrize(
  "fields,expected",
  [
    (dict(model__width=0), "model.width=0 is impossible"),
    (dict(optimizer__learning_rate=-0.1), "optimizer.learning_rate=-0.1 is impossible"),
    (dict(num_seeds=0), "num_seeds=0 is impossible"),
    (dict(model__width=2.5), "model.width=2.5 should be a int"),
    (dict(optimizer__name="adamm"), "Unknown optimizer 'adamm'; known: ['adamw'"),
    (dict(data__task="mnist"), "data.task='mnist' is impossible"),
    (dict(data__loss="logistic"), "needs ±1 labels"),
  ],
)
def test_bad_config_fails_before_training(tmp_path, fields, expected):
  # A plain, type-unsafe copy, so the test can write wrong types (flags refuse them).
  config = unsafe_config_with(_config("runlocal"), **fields)
  with pytest.raises(training.ConfigError, match=None) as info:
    training.run(config, tmp_path / "run")
  assert expected in str(info.value) and "\n" not in str(info.value)
  assert not (tmp_path / "run").exists()


def test_unknown_config_field_is_refused(tmp_path):
  config = _config("runlocal")
  config.unlock()
  config.model.widht = 3
  with pytest.raises(training.ConfigError, match="Unknown config field 'model.widht'"):
    config_checks.validate_config(config)


@pytest.mark.parametrize(
  "flags,expected",
  [
    (
      ["--config=configs/relu2.py:runlocal", "--config.model.widht=3"],
      "unknown config field 'widht' in --config.model.widht=3",
    ),
    (
      ["--config=configs/relu2.py:runlocal", "--config.model.width=0"],
      "model.width=0 is impossible",
    ),
    (["--config=configs/relu2.py:runlocal,optimizer=adam"], "No config defaults for optimizer"),
  ],
)
def test_cli_reports_bad_config_in_one_line(tmp_path, flags, expected):
  result = subprocess.run(
    [sys.executable, "train.py", *flags, f"--workdir={tmp_path}/w"],
    cwd=REPO,
    env=dict(os.environ, PYTHONPATH=str(REPO)),
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert result.returncode == 1
  lines = [s for s in result.stderr.splitlines() if s.strip() and not s.startswith("W")]
  assert lines[-1].startswith("train.py:") and expected in lines[-1], result.stderr
  assert "Traceback" not in result.stderr


def test_resume_with_different_config_is_refused(tmp_path):
  training.run(_config("runlocal,steps=20"), tmp_path)
  changed = _config("runlocal,steps=40", optimizer__learning_rate=0.05)
  with pytest.raises(training.ConfigError) as info:
    training.run(changed, tmp_path)
  message = str(info.value)
  assert "num_steps: 20 -> 40" in message and "optimizer.learning_rate: 0.01 -> 0.05" in message
  assert "--override_config" in message
  summary = training.run(changed, tmp_path, override_config=True)
  assert summary["resumed_from_step"] == 20
  assert json.loads((tmp_path / wd.CONFIG_FILE).read_text())["num_steps"] == 40


def test_relative_workdir_trains_resumes_and_loads(tmp_path, monkeypatch):
  """The README runs with workdirs like runs/sweep: orbax needs absolute paths."""
  monkeypatch.chdir(tmp_path)
  config = _config(num_steps=20, checkpoint_every=10)
  summary = training.run(config, "runs/relative")
  assert summary["status"] == "finished"
  _, params = wd.load_params("runs/relative")
  assert params["hidden"]["kernel"].shape[0] == config.num_seeds
