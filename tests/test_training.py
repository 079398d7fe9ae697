"""The training library's paths that the end-to-end trainer tests do not
reach: leaf names, a data-iterator mismatch, --override_config, a torn
metrics line, GPT-2's NaN stop, SIGTERM + resume with the grain iterator, the
BPE tokenizer, dropout with accumulation, and each data.source kind."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds
from absl import logging

import training
from configs import gpt2 as gpt2_config
from configs import relu2 as relu2_config
from data import token_shards
from tests.config_overrides import assert_params_close, config_with
from training import finite, metrics
from training import workdir as wd

logging.set_verbosity(logging.WARNING)
REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("compilation_cache")  # tests/conftest.py


def _relu2(variant="runlocal", **fields):
  return config_with(relu2_config.get_config, variant, **fields)


def _gpt2(variant="runlocal", **fields):
  return config_with(gpt2_config.get_config, variant, **fields)


def _train_py(*args, env=None, timeout=300):
  env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu", **(env or {}))
  return subprocess.run(
    [sys.executable, "train.py", *args],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=timeout,
  )


class _Pair(NamedTuple):
  first: jax.Array
  second: jax.Array


def test_leaf_names_of_namedtuples_lists_and_dicts():
  tree = {"opt": _Pair(jnp.zeros(1), [jnp.zeros(1), {"k": jnp.zeros(1)}])}
  names = [metrics.leaf_name(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]
  # The old helper named NamedTuple leaves by their repr.
  assert names == ["opt/first", "opt/second/0", "opt/second/1/k"]


def test_data_iterator_mismatch_on_restore_is_refused(tmp_path):
  training.run(_relu2("runlocal,steps=40", batch_size=16, checkpoint_every=20), tmp_path)
  (tmp_path / wd.SUMMARY_FILE).unlink()
  other = _relu2("runlocal,steps=40", batch_size=32, checkpoint_every=20)
  with pytest.raises(training.ConfigError, match="data iterator") as info:
    training.run(other, tmp_path, override_config=True)
  assert "\n" not in str(info.value)


def test_override_config_through_train_py(tmp_path):
  flags = ["--config=configs/relu2.py:runlocal,steps=40", "--config.checkpoint_every=20"]
  assert _train_py(*flags, f"--workdir={tmp_path}").returncode == 0
  longer = ["--config=configs/relu2.py:runlocal,steps=60", "--config.checkpoint_every=20"]
  refused = _train_py(*longer, f"--workdir={tmp_path}")
  assert refused.returncode == 1 and "Traceback" not in refused.stderr
  assert "num_steps: 40 -> 60" in refused.stderr and "--override_config" in refused.stderr
  assert json.loads((tmp_path / wd.CONFIG_FILE).read_text())["num_steps"] == 40
  resumed = _train_py(*longer, "--override_config", f"--workdir={tmp_path}")
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  assert wd.read_summary(tmp_path)["resumed_from_step"] == 40
  assert json.loads((tmp_path / wd.CONFIG_FILE).read_text())["num_steps"] == 60
  assert len(list(tmp_path.glob("config.replaced_*.json"))) == 1


def test_torn_metrics_line_and_lines_past_the_checkpoint_are_dropped(tmp_path):
  config = _relu2("runlocal,steps=40", checkpoint_every=20, log_every=10)
  training.run(config, tmp_path / "ref")
  run = tmp_path / "run"
  training.run(_relu2("runlocal,steps=20", checkpoint_every=20, log_every=10), run)
  with (run / wd.METRICS_FILE).open("a") as f:
    f.write('{"step": 30, "train_loss": 1.0}\n{"step": 40, "train_lo')  # a kill mid-write
  summary = training.run(config, run, override_config=True)
  assert summary["resumed_from_step"] == 20
  strip = lambda rows: [{k: v for k, v in r.items() if "per_sec" not in k} for r in rows]
  assert strip(wd.read_metrics(run)) == strip(wd.read_metrics(tmp_path / "ref"))


def test_corrupt_config_json_is_one_line(tmp_path):
  (tmp_path / wd.CONFIG_FILE).write_text("{not json")
  with pytest.raises(training.ConfigError, match="config.json is unreadable") as info:
    training.run(_relu2(), tmp_path)
  assert "\n" not in str(info.value)


def test_device_divisibility_fails_before_the_workdir_exists(tmp_path):
  result = _train_py(
    "--config=configs/gpt2.py:runlocal,batch=4",
    f"--workdir={tmp_path}/run",
    env={"XLA_FLAGS": "--xla_force_host_platform_device_count=8"},
  )
  assert result.returncode == 1 and "Traceback" not in result.stderr
  assert "not divisible by the 8 devices" in result.stderr
  assert not (tmp_path / "run").exists()


def test_gpt2_nonfinite_loss_stops_in_one_line(tmp_path):
  config = _gpt2(
    "runlocal,steps=30",
    checkpoint_every=10,
    log_every=5,
    optimizer__learning_rate=1e6,
    optimizer__grad_clip_norm=0.0,
    optimizer__schedule="constant",
    optimizer__warmup_steps=0,
  )
  with pytest.raises(training.NonFiniteError) as info:
    training.run(config, tmp_path)
  message = str(info.value)
  assert "became NaN/inf first" in message and "\n" not in message
  assert "lower optimizer.learning_rate (now 1000000.0)" in message
  assert "set optimizer.grad_clip_norm (now 0: no clipping)" in message
  assert not (tmp_path / wd.SUMMARY_FILE).exists()
  for step in wd.checkpoint_steps(tmp_path):  # Whatever was saved is finite.
    _, params = wd.load_params(tmp_path, step)
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(params))


def _record(loss=-1, grads=(-1, -1), params=(-1, -1)):
  tree = lambda pair: {
    "head": {"kernel": np.int32(pair[0])},
    "hidden": {"kernel": np.int32(pair[1])},
  }
  return {"loss": np.int32(loss), "grads": tree(grads), "params": tree(params)}


def test_nonfinite_record_names_the_first_culprits():
  # Known answers: the earliest step wins, ties are all named, -1 is never.
  assert finite.culprits(_record()) == (-1, [])
  assert finite.culprits(_record(loss=7, grads=(5, 9))) == (5, ["the gradient of head/kernel"])
  step, names = finite.culprits(_record(loss=3, grads=(3, -1), params=(4, 4)))
  assert (step, names) == (3, ["the loss", "the gradient of head/kernel"])
  config = _relu2("runlocal")
  only_params = finite.advice(config, ["the parameter hidden/kernel"])
  assert only_params.startswith("the update overflowed with finite gradients")
  assert "grad_clip_norm" in finite.advice(config, ["the loss"])
  # The seed that went bad first is the one described, with its config seed.
  record_S = jax.tree.map(lambda a, b: np.stack([a, b]), _record(loss=9), _record(grads=(-1, 2)))
  text = finite.describe(record_S, config, seed_offset=10)
  assert text.startswith("at step 2 (seed 11) the gradient of hidden/kernel became NaN/inf first")


def test_the_step_records_what_went_nonfinite():
  params = {"a": jnp.ones(2), "b": jnp.ones(2)}
  record = finite.empty_record(params)
  record = finite.update_record(record, 1, jnp.float32(1.0), params, params)
  bad = {"a": jnp.array([1.0, jnp.inf]), "b": jnp.ones(2)}
  record = finite.update_record(record, 2, jnp.float32(1.0), bad, params)
  record = finite.update_record(record, 3, jnp.float32(jnp.nan), bad, bad)
  host = jax.device_get(record)
  assert int(host["loss"]) == 3 and int(host["grads"]["a"]) == 2 and int(host["grads"]["b"]) == -1
  assert int(host["params"]["a"]) == 3 and finite.culprits(host) == (2, ["the gradient of a"])


# ~55 s on 2 cores (`pytest -m slow`); the in-process GPT-2 resume test of
# test_train_gpt2.py runs by default, the relu2 SIGTERM/SIGKILL ones too.
@pytest.mark.slow
def test_gpt2_sigterm_then_resume_is_bitwise_identical(tmp_path):
  variant = "runlocal,steps=400,batch=8"
  flags = [
    f"--config=configs/gpt2.py:{variant}",
    "--config.checkpoint_every=5",
    "--config.log_every=5",
    "--config.eval_every=400",
  ]
  reference = training.run(
    _gpt2(variant, checkpoint_every=5, log_every=5, eval_every=400), tmp_path / "ref"
  )
  env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
  log = (tmp_path / "log.txt").open("w")
  proc = subprocess.Popen(
    [sys.executable, "train.py", *flags, f"--workdir={tmp_path}/run"],
    cwd=REPO,
    env=env,
    stdout=log,
    stderr=subprocess.STDOUT,
  )
  deadline = time.time() + 240
  while not wd.checkpoint_steps(tmp_path / "run") and time.time() < deadline:
    assert proc.poll() is None, (tmp_path / "log.txt").read_text()[-2000:]
    time.sleep(0.05)
  proc.send_signal(signal.SIGTERM)
  assert proc.wait(timeout=120) == 0, (tmp_path / "log.txt").read_text()[-2000:]
  saved = wd.checkpoint_steps(tmp_path / "run")
  assert saved and saved[-1] < 400 and not (tmp_path / "run" / wd.SUMMARY_FILE).exists()
  resumed = training.run(
    _gpt2(variant, checkpoint_every=5, log_every=5, eval_every=400), tmp_path / "run"
  )
  assert resumed["resumed_from_step"] == saved[-1]
  assert_params_close(tmp_path / "ref", tmp_path / "run", rtol=0, atol=0)  # Bitwise.
  assert resumed["final_val_loss"] == reference["final_val_loss"]


def test_bpe_tokenizer_through_the_trainer(tmp_path):
  config = _gpt2(
    "runlocal,steps=4,tokenizer=bpe",
    log_every=2,
    eval_every=4,
    checkpoint_every=2,
    data__bpe_vocab_size=300,
  )
  summary = training.run(config, tmp_path)
  assert summary["vocab_size"] == 300 and "bpe" in summary["tokenizer"]
  assert (tmp_path / "tokenizer").is_dir()
  losses = [r["train_loss"] for r in wd.read_metrics(tmp_path)]
  assert np.isfinite(losses).all() and losses[0] < np.log(300) + 1.0


@pytest.mark.slow  # ~17 s: `pytest -m slow`
def test_dropout_with_grad_accumulation_is_deterministic_and_acts(tmp_path):
  common = dict(log_every=1, eval_every=4, checkpoint_every=4)
  runs = {}
  for name, dropout in (("a", 0.2), ("b", 0.2), ("none", 0.0)):
    runs[name] = training.run(
      _gpt2("runlocal,steps=4,accum=2", model__dropout=dropout, **common), tmp_path / name
    )
  assert_params_close(tmp_path / "a", tmp_path / "b", rtol=0, atol=0)  # Same seed, same masks.
  loss = lambda name: [r["train_loss"] for r in wd.read_metrics(tmp_path / name)]
  assert loss("a") != loss("none")  # The masks change the microbatch losses.
  assert np.isfinite(loss("a")).all()


def _falls(workdir: Path) -> None:
  losses = [r["train_loss"] for r in wd.read_metrics(workdir) if "train_loss" in r]
  assert len(losses) >= 2 and losses[-1] < losses[0], losses


def test_source_shards_end_to_end(tmp_path):
  rng = np.random.default_rng(0)
  # A learnable stream: a repeated pattern of a few ids below GPT-2's vocab.
  pattern = rng.integers(0, 500, 37)
  for split, n in (("train", 40), ("val", 8)):
    token_shards.write_shard(str(tmp_path / f"tiny_{split}_000.bin"), np.tile(pattern, n))
  config = _gpt2(
    "runlocal,steps=12",
    log_every=4,
    eval_every=12,
    checkpoint_every=12,
    data__source=f"shards:{tmp_path}/tiny_{{split}}_*.bin",
    optimizer__learning_rate=1e-2,
  )
  summary = training.run(config, tmp_path / "run")
  assert summary["vocab_size"] == 50257 and set(summary["final_val_loss"]) == {"shards", "mean"}
  _falls(tmp_path / "run")


def test_source_text_end_to_end(tmp_path):
  for i in range(4):
    for kind in ("notes", "poems"):
      (tmp_path / kind).mkdir(exist_ok=True)
      (tmp_path / kind / f"{i}.txt").write_text(f"{kind} number {i}: " + "abc def " * 200)
  config = _gpt2(
    "runlocal,steps=12",
    log_every=4,
    eval_every=12,
    checkpoint_every=12,
    data__source=f"text:{tmp_path}/notes/*.txt+{tmp_path}/poems/*.txt",
    data__sources="prose+code",
    data__ood_sources="",
  )
  summary = training.run(config, tmp_path / "run")
  assert len(summary["final_val_loss"]) == 3  # two sources and the mean
  _falls(tmp_path / "run")


def test_source_tfds_end_to_end(tmp_path):
  config = _gpt2(
    "runlocal,steps=8",
    log_every=4,
    eval_every=8,
    checkpoint_every=8,
    data__source="tfds:lm1b",
    data__ood_sources="",
  )
  with tfds.testing.mock_data(num_examples=64):
    summary = training.run(config, tmp_path / "run")
  assert set(summary["final_val_loss"]) == {"lm1b", "mean"}
  assert np.isfinite(summary["final_val_loss"]["mean"])


@pytest.mark.parametrize(
  "source,expected",
  [
    ("shards:/nonexistent/x_{split}.bin", "/nonexistent/x_train.bin"),
    ("shards:/tmp/no_split_placeholder.bin", "{split}"),
    ("text:/nonexistent/*.txt", "/nonexistent/*.txt"),
    ("bogus:x", "data.source='bogus:x' is impossible"),
  ],
)
def test_bad_source_fails_before_the_workdir_exists(tmp_path, source, expected):
  config = _gpt2("runlocal", data__source=source)
  with pytest.raises(training.ConfigError) as info:
    training.run(config, tmp_path / "run")
  assert expected in str(info.value) and "\n" not in str(info.value)
  assert not (tmp_path / "run").exists()


def test_second_process_on_a_workdir_is_refused_and_a_stale_lock_is_not(tmp_path):
  (tmp_path / wd.LOCK_FILE).write_text("999999\n")  # a dead run's lock file: no flock held
  flags = ["--config=configs/relu2.py:runlocal,steps=100000", "--config.log_every=1000"]
  env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
  first = subprocess.Popen(
    [sys.executable, "train.py", *flags, f"--workdir={tmp_path}"],
    cwd=REPO,
    env=env,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.PIPE,
  )
  try:
    deadline = time.time() + 120
    while str(first.pid) not in (tmp_path / wd.LOCK_FILE).read_text():
      assert first.poll() is None and time.time() < deadline
      time.sleep(0.05)
    second = _train_py(*flags, f"--workdir={tmp_path}")
    assert second.returncode == 1 and "Traceback" not in second.stderr
    assert f"in use by another process (pid {first.pid})" in second.stderr
  finally:
    first.send_signal(signal.SIGTERM)
    first.wait(timeout=60)


def test_checkpoints_without_config_json_are_refused(tmp_path):
  training.run(_relu2("runlocal,steps=20", checkpoint_every=20), tmp_path)
  (tmp_path / wd.CONFIG_FILE).unlink()
  (tmp_path / wd.SUMMARY_FILE).unlink()
  with pytest.raises(training.ConfigError, match="checkpoints but no config.json"):
    training.run(_relu2("runlocal,steps=20", checkpoint_every=20), tmp_path)
  summary = training.run(
    _relu2("runlocal,steps=20", checkpoint_every=20), tmp_path, override_config=True
  )
  assert summary["resumed_from_step"] == 20


def test_corrupt_newest_checkpoint_falls_back_to_the_previous_one(tmp_path):
  config = _relu2("runlocal,steps=60", checkpoint_every=20, log_every=10, batch_size=16)
  training.run(config, tmp_path / "ref")
  run = tmp_path / "run"
  training.run(_relu2("runlocal,steps=40", checkpoint_every=20, log_every=10, batch_size=16), run)
  params_dir = run / wd.CHECKPOINT_DIR / "40" / wd.PARAMS_ITEM
  for f in params_dir.rglob("*"):  # truncate every data file of the newest params
    if f.is_file() and f.parent.name == "d":
      f.write_bytes(f.read_bytes()[:10])
  summary = training.run(config, run, override_config=True)
  assert summary["resumed_from_step"] == 20
  assert (run / wd.CHECKPOINT_DIR / "bad-40").is_dir()  # kept, not deleted
  assert_params_close(tmp_path / "ref", run, rtol=0, atol=0)


def test_checkpoint_of_another_model_is_one_line_and_nothing_moves(tmp_path):
  training.run(_relu2("runlocal,steps=20", checkpoint_every=20), tmp_path)
  (tmp_path / wd.SUMMARY_FILE).unlink()
  wider = _relu2("runlocal,steps=20", checkpoint_every=20, model__width=8)
  before = (tmp_path / wd.CONFIG_FILE).read_text()
  with pytest.raises(training.ConfigError, match="No checkpoint in .* fits this config") as info:
    training.run(wider, tmp_path, override_config=True)
  assert "\n" not in str(info.value) and "Nothing was changed" in str(info.value)
  assert wd.checkpoint_steps(tmp_path) == [20]
  # The failed override left config.json as it was: the original command still resumes.
  assert (tmp_path / wd.CONFIG_FILE).read_text() == before
  assert not list(tmp_path.glob("config.replaced_*"))
  assert wd.load_config(tmp_path).model.width == _relu2("runlocal,steps=20").model.width
