"""GPT-2's init_from ("spawning"): a run starts from another run's parameters with a fresh
optimizer state; what it cannot start from is refused in one line before anything is written."""

import jax
import numpy as np
import pytest
from absl import logging

import training
from configs.gpt2 import get_config
from tests.config_overrides import assert_params_close, config_with, unsafe_config_with
from training import workdir as wd

logging.set_verbosity(logging.WARNING)
pytestmark = pytest.mark.usefixtures("compilation_cache")  # tests/conftest.py


def _config(variant="runlocal", **fields):
  return config_with(get_config, variant, **fields)


@pytest.fixture(scope="module")
def trunk(tmp_path_factory):
  path = tmp_path_factory.mktemp("trunk")
  training.run(_config("runlocal,steps=10", checkpoint_every=5, keep_checkpoints=3), path)
  return path


def test_starts_from_the_runs_parameters(tmp_path, trunk):
  # SGD at η = 1e-30 moves no O(1e-2) weight by one ulp: the child ends where it started.
  child = training.run(
    _config(
      "runlocal,steps=2,optimizer=sgd",
      seed=3,
      init_from=str(trunk),
      optimizer__learning_rate=1e-30,
      optimizer__schedule="constant",
    ),
    tmp_path / "child",
  )
  assert_params_close(trunk, tmp_path / "child", rtol=0, atol=1e-20)
  fresh = training.run(
    _config("runlocal,steps=2,optimizer=sgd", seed=3, optimizer__learning_rate=1e-30),
    tmp_path / "fresh",
  )
  # The trunk's 10 steps of AdamW are worth about a nat over the init.
  assert child["final_val_loss_mean"] < fresh["final_val_loss_mean"] - 0.3


def test_an_earlier_checkpoint(tmp_path, trunk):
  training.run(
    _config(
      "runlocal,steps=2,optimizer=sgd",
      init_from=str(trunk),
      init_from_step=5,
      optimizer__learning_rate=1e-30,
    ),
    tmp_path / "child",
  )
  with pytest.raises(AssertionError):  # Step 5's parameters, not the trunk's last.
    assert_params_close(trunk, tmp_path / "child", rtol=0, atol=1e-20)
  _, at5 = wd.load_params(trunk, 5)
  _, child = wd.load_params(tmp_path / "child")
  for a, b in zip(jax.tree.leaves(at5), jax.tree.leaves(child), strict=True):
    np.testing.assert_allclose(b, a, rtol=0, atol=1e-20)


@pytest.mark.parametrize(
  "fields,expected",
  [
    (dict(init_from="/nonexistent/run"), "config.json not found"),
    (dict(init_from_step=7), "No checkpoint at step 7"),
    (dict(model__size="small"), "this model's"),
    (dict(init_seed=0), "both name the starting parameters"),
  ],
)
def test_what_it_cannot_start_from_is_refused_in_one_line(tmp_path, trunk, fields, expected):
  fields = {"init_from": str(trunk), **fields}
  config = unsafe_config_with(_config("runlocal,steps=2"), **fields)
  with pytest.raises(training.ConfigError if "init_seed" in fields else ValueError) as info:
    training.run(config, tmp_path / "run")
  assert expected in str(info.value) and "\n" not in str(info.value), info.value
  assert not (tmp_path / "run").exists()
