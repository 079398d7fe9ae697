"""train.py on GPT-2: 8 devices = 1 device, learning below the unigram entropy,
resume (grain iterator included), gradient accumulation, config errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from absl import logging

import training
from configs.gpt2 import get_config
from data import text_sources, tokenizers
from tests.config_overrides import assert_params_close, config_with, unsafe_config_with
from training import config_checks
from training import workdir as wd

logging.set_verbosity(logging.WARNING)
REPO = Path(__file__).resolve().parents[1]


def _config(variant="runlocal", **fields):
  return config_with(get_config, variant, **fields)


pytestmark = pytest.mark.usefixtures("compilation_cache")  # tests/conftest.py


def _losses(workdir, key="train_loss"):
  return np.asarray([r[key] for r in wd.read_metrics(workdir) if key in r])


def test_eight_devices_match_one_device(tmp_path, compilation_cache):
  variant = "runlocal,optimizer=muon,steps=20"
  flags = ["--config.log_every=5", "--config.eval_every=10", "--config.checkpoint_every=20"]
  env = dict(
    os.environ,
    PYTHONPATH=str(REPO),
    XLA_FLAGS="--xla_force_host_platform_device_count=8",
    JAX_PLATFORMS="cpu",
    JAX_COMPILATION_CACHE_DIR=str(compilation_cache),
  )
  result = subprocess.run(
    [
      sys.executable,
      "train.py",
      f"--config=configs/gpt2.py:{variant}",
      *flags,
      f"--workdir={tmp_path}/eight",
    ],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  one = training.run(
    _config(variant, log_every=5, eval_every=10, checkpoint_every=20), tmp_path / "one"
  )
  eight = wd.read_summary(tmp_path / "eight")
  assert eight["num_devices"] == 8 and one["num_devices"] == 1
  np.testing.assert_allclose(
    _losses(tmp_path / "eight"), _losses(tmp_path / "one"), rtol=1e-5, atol=1e-5
  )
  np.testing.assert_allclose(
    _losses(tmp_path / "eight", "val_loss/mean"),
    _losses(tmp_path / "one", "val_loss/mean"),
    rtol=1e-5,
    atol=1e-5,
  )
  # analysis reads GPT-2 workdirs like relu2's: a leading seed axis of 1.
  _, params = wd.load_params(tmp_path / "eight")
  assert params["h_0"]["attn"]["c_attn"]["kernel"].shape == (1, 64, 192)
  assert "tokens_per_sec" in eight and eight["tokens_per_sec"] > 0


def _unigram_entropy(config) -> float:
  """Entropy (nats) of the byte distribution of the training mixture's text."""
  tok = tokenizers.get_tokenizer("bytes")
  counts = np.zeros(256)
  for name in config.data.sources.split("+"):
    docs = text_sources.load_source(name, "train", max_chars=config.data.max_chars).documents
    for doc in docs:
      counts += np.bincount(tok.encode(doc), minlength=256)[:256]
    counts[tok.eot_id] += len(docs)
  p = counts[counts > 0] / counts.sum()
  return float(-(p * np.log(p)).sum())


def _learns_below_unigram(tmp_path, steps):
  config = _config(
    f"runlocal,steps={steps},batch=16",
    log_every=50,
    eval_every=steps,
    checkpoint_every=steps,
    optimizer__learning_rate=1e-2,
    optimizer__warmup_steps=10,
  )
  config.data.seq_len = 64
  summary = training.run(config, tmp_path)
  entropy = _unigram_entropy(config)
  return summary, entropy


def test_learns_below_unigram_entropy_fast(tmp_path):
  summary, entropy = _learns_below_unigram(tmp_path, 150)
  assert summary["final_val_loss_mean"] < entropy - 0.1, (summary["final_val_loss"], entropy)
  assert set(summary["final_ood_loss"]) == {"code_ood", "math_ood", "mean"}
  assert "h_1/mlp/c_fc/kernel" in summary["constraints"]
  assert "h_1/mlp/c_fc/kernel" in summary["param_norms"]


@pytest.mark.slow
def test_learns_well_below_unigram_entropy(tmp_path):
  summary, entropy = _learns_below_unigram(tmp_path, 600)
  assert summary["final_val_loss_mean"] < entropy - 0.6, (summary["final_val_loss"], entropy)


def test_resume_gives_the_same_params_and_data(tmp_path):
  config = _config(
    "runlocal,steps=20", checkpoint_every=10, log_every=5, optimizer__schedule="constant"
  )
  full = training.run(config, tmp_path / "full")
  # Stop at step 10 (the checkpoint, with the grain iterator's state), then go on.
  training.run(
    _config("runlocal,steps=10", checkpoint_every=10, log_every=5, optimizer__schedule="constant"),
    tmp_path / "split",
  )
  resumed = training.run(config, tmp_path / "split", override_config=True)
  assert resumed["resumed_from_step"] == 10
  assert_params_close(tmp_path / "full", tmp_path / "split", rtol=0, atol=0)  # Bitwise.
  assert full["final_val_loss"] == resumed["final_val_loss"]
  np.testing.assert_array_equal(_losses(tmp_path / "full"), _losses(tmp_path / "split"))


def test_grad_accumulation_equals_one_big_batch(tmp_path):
  common = dict(log_every=1, eval_every=5, checkpoint_every=5)
  big = training.run(_config("runlocal,steps=5,batch=8,accum=1", **common), tmp_path / "big")
  acc = training.run(_config("runlocal,steps=5,batch=8,accum=4", **common), tmp_path / "acc")
  np.testing.assert_allclose(
    _losses(tmp_path / "acc"), _losses(tmp_path / "big"), rtol=2e-5, atol=2e-5
  )
  np.testing.assert_allclose(
    _losses(tmp_path / "acc", "grad_norm"), _losses(tmp_path / "big", "grad_norm"), rtol=1e-4
  )
  assert_params_close(tmp_path / "big", tmp_path / "acc", rtol=1e-4, atol=1e-5)
  assert big["final_val_loss"]["mean"] == pytest.approx(acc["final_val_loss"]["mean"], abs=1e-4)


@pytest.mark.parametrize(
  "fields,expected",
  [
    (dict(num_seeds=2), "one seed per workdir"),
    (dict(batch_size=6, grad_accum_steps=4), "not divisible by grad_accum_steps"),
    (dict(model__size="huge"), "model.size='huge' is impossible"),
    (dict(data__sources="prose+poetry"), "data.sources='prose+poetry' is impossible"),
    (dict(data__weights="1+2"), "has 2 entries for the 3 data.sources"),
    (dict(data__seq_len=4096), "exceeds the context"),
    (dict(eval_every=0), "eval_every=0 is impossible"),
  ],
)
def test_bad_gpt2_config_fails_before_training(tmp_path, fields, expected):
  config = unsafe_config_with(_config("runlocal"), **fields)
  with pytest.raises(training.ConfigError) as info:
    training.run(config, tmp_path / "run")
  assert expected in str(info.value) and "\n" not in str(info.value)
  assert not (tmp_path / "run").exists()


def test_unknown_gpt2_field_is_refused():
  config = _config("runlocal")
  config.unlock()
  config.data.seqlen = 3
  with pytest.raises(training.ConfigError, match="Unknown config field 'data.seqlen'"):
    config_checks.validate_config(config)


def test_config_variants():
  config = get_config(
    "size=small,optimizer=muon,steps=7,batch=4,accum=2,seq_len=16,"
    "tokenizer=bpe,sources=prose+math,weights=3+1"
  )
  assert (config.model.size, config.optimizer.name, config.num_steps) == ("small", "muon", 7)
  assert (config.batch_size, config.grad_accum_steps, config.data.seq_len) == (4, 2, 16)
  assert (config.data.tokenizer, config.data.sources, config.data.weights) == (
    "bpe",
    "prose+math",
    "3+1",
  )
  config_checks.validate_config(config)
  json.dumps(config.to_dict())
