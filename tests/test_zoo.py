"""The zoo through the factory and the trainer: every optimizer is a config
name with its defaults, trains relu2 (and tiny GPT-2, `slow`) with a falling
loss, and its implicit-bias spec gives the summary the matching quantity.
The update rules themselves are checked against NumPy in tests/test_NAME.py."""

import shutil

import jax
import numpy as np
import pytest

import training
from configs import gpt2 as gpt2_config
from configs import relu2 as relu2_config
from configs.common import OPTIMIZER_DEFAULTS, optimizer_config
from optimizers import factory, implicit_bias
from tests.config_overrides import assert_params_close
from training import finite, relu2, tasks
from training import workdir as wd

ZOO = (
  "polargrad",
  "kaon",
  "freon",
  "normuon",
  "sf_normuon",
  "mimuon",
  "dion",
  "pion",
  "scion",
  "symmetric",
)


def test_every_zoo_member_is_registered_with_config_defaults():
  # crossfit_adamw too (its trainer tests, GPT-2 with accum >= 2: tests/test_crossfit.py).
  for name in (*ZOO, "crossfit_adamw"):
    assert name in factory.OPTIMIZERS and name in OPTIMIZER_DEFAULTS
    section = optimizer_config(name)
    factory.check_optimizer_config(section)
    line = implicit_bias.describe(dict(section, weight_decay=0.1))
    assert line and "\n" not in line, name


def _relu2(variant: str, **fields):
  config = relu2_config.get_config(variant)
  with config.unlocked():
    config.log_every = 10
    for key, value in fields.items():
      node = config
      *parents, leaf = key.split("__")
      for p in parents:
        node = node[p]
      node[leaf] = value
  return config


@pytest.mark.parametrize("name", ZOO)
def test_trains_relu2_through_the_trainer(tmp_path, name):
  summary = training.run(_relu2(f"runlocal,optimizer={name},steps=100"), tmp_path)
  rows = wd.read_metrics(tmp_path)
  assert rows[-1]["train_loss"] < 0.5 * rows[0]["train_loss"], (name, rows[0], rows[-1])
  assert np.isfinite(summary["final_test_loss"])
  assert set(summary["constraints"]) == {"head/kernel", "hidden/bias", "hidden/kernel"}


@pytest.mark.slow
@pytest.mark.parametrize("name", ZOO)
def test_trains_tiny_gpt2_through_the_trainer(tmp_path, name):
  # The symmetric stack's embedding and head classes take the authors' η = 1e-3 (50x below
  # its matrices'), so it needs 40 steps to clear the bar below (20 steps: 4.70 nats).
  steps = 40 if name == "symmetric" else 20
  config = gpt2_config.get_config(f"runlocal,optimizer={name},steps={steps}")
  with config.unlocked():
    config.log_every = 5
  summary = training.run(config, tmp_path)
  rows = wd.read_metrics(tmp_path)
  assert rows[-1]["train_loss"] < rows[0]["train_loss"], (name, rows[0], rows[-1])
  # Well below the uniform predictor's ln(256) = 5.55 nats per byte.
  assert summary["final_val_loss_mean"] < np.log(summary["vocab_size"]) - 1.0, summary


def _params():
  return {
    "hidden": {"kernel": np.ones((4, 8), np.float32), "bias": np.zeros(8, np.float32)},
    "head": {"kernel": np.ones((8, 1), np.float32)},
  }


def _by_leaf(section):
  tree = factory.implicit_constraints(section, _params())
  return {
    "/".join(str(k.key) for k in path): c
    for path, c in jax.tree_util.tree_flatten_with_path(tree)[0]
  }


def test_implicit_bias_specs_place_each_member():
  lam = dict(weight_decay=0.1, adam_weight_decay=0.2)
  polar = _by_leaf(dict(optimizer_config("polargrad"), **lam))
  assert (polar["hidden/kernel"].k, polar["hidden/kernel"].kind) == ("half_nuclear_sq", "penalty")
  assert (polar["head/kernel"].k, polar["head/kernel"].weight_decay) == ("l1", 0.2)
  # Freon: a Schatten ball for q ≥ 1 (q = 1: Muon's σ_max), none known below.
  for q, k, kind in ((1.0, "nuclear", "ball"), (1.5, "schatten", "ball"), (0.5, "nuclear", "none")):
    c = _by_leaf(dict(optimizer_config("freon"), q=q, **lam))["hidden/kernel"]
    assert (c.k, c.kind) == (k, kind)
  assert _by_leaf(dict(optimizer_config("freon"), q=1.5))["hidden/kernel"].k_options == {"p": 1.5}
  for name in ("kaon", "normuon", "sf_normuon", "mimuon", "dion"):
    assert _by_leaf(dict(optimizer_config(name), **lam))["hidden/kernel"].kind == "none"
  crossfit = dict(optimizer_config("crossfit_adamw"), weight_decay=0.1)
  assert _by_leaf(crossfit)["hidden/kernel"].kind == "none"
  std = _by_leaf(dict(crossfit, mode="std"))
  assert (std["hidden/kernel"].k, std["hidden/kernel"].kind) == ("l1", "ball")  # AdamW's ℓ∞
  pion = _by_leaf(dict(optimizer_config("pion"), weight_decay=0.1))
  assert pion["hidden/kernel"].weight_decay == 0.0 and pion["head/kernel"].weight_decay == 0.1
  scion = _by_leaf(optimizer_config("scion"))  # λ = 1/ρ: the ball ρ written as λ·K* ≤ 1
  assert scion["hidden/kernel"].weight_decay == pytest.approx(1 / 3.0)
  assert scion["hidden/kernel"].k_options["norm"] == "spectral"
  assert (
    not _by_leaf(dict(optimizer_config("scion"), constrained=False))["hidden/kernel"].kind == "ball"
  )


def test_scion_iterates_end_inside_their_ball(tmp_path):
  # Frank–Wolfe with γ = 0.05 for 200 steps contracts the start by 0.95^200:
  # every class's norm ends ≤ ρ (exact lmo with method="svd").
  config = _relu2(
    "runlocal,optimizer=scion,steps=200", optimizer__method="svd", optimizer__learning_rate=0.05
  )
  summary = training.run(config, tmp_path)
  for name, layer in summary["constraints"].items():
    assert layer["k"] == "scion_ball"
    assert max(layer["lambda_dual_norm"]) <= 1 + 1e-4, (name, layer)


def test_schedule_free_summaries_are_at_the_average_iterate():
  from optimizers.sf_normuon import evaluation_params

  config = _relu2("runlocal,optimizer=sf_normuon,steps=30,seeds=2")
  exp = tasks.relu2_experiment(config)
  tx = factory.make_optimizer(config.optimizer, config.num_steps)
  state = relu2.init_state(exp, tx, config)
  record = jax.vmap(finite.empty_record)(state["seeds"]["params"])
  step = relu2.make_train_step(exp, tx)
  for _ in range(30):
    state, record, _ = step(state, record)
  params_S, opt_S = state["seeds"]["params"], state["seeds"]["opt_state"]
  summary = relu2.make_summary(exp, config, params_S, opt_S)
  x_S = jax.vmap(evaluation_params)(params_S, opt_S)
  at_x = jax.vmap(exp.evaluate)(x_S)["train_loss"]
  at_y = jax.vmap(exp.evaluate)(params_S)["train_loss"]
  np.testing.assert_allclose(summary["final"]["train_loss"], np.asarray(at_x), rtol=1e-6)
  assert not np.allclose(np.asarray(at_x), np.asarray(at_y))  # x and y differ: not vacuous
  assert summary["evaluated_at"].endswith("evaluation_params(params, opt_state)")


def _resume_is_bitwise(tmp_path, name):
  """40 steps in one go == 40 steps resumed from the checkpoint at 20 (the newer
  one and the summary removed, as after a kill): the whole optimizer state
  round-trips through orbax."""
  config = _relu2(f"runlocal,optimizer={name},steps=40,seeds=2", checkpoint_every=20)
  training.run(config, tmp_path / "ref")
  training.run(config, tmp_path / "run")
  shutil.rmtree(tmp_path / "run" / wd.CHECKPOINT_DIR / "40")
  (tmp_path / "run" / wd.SUMMARY_FILE).unlink()
  summary = training.run(config, tmp_path / "run")
  assert summary["resumed_from_step"] == 20
  assert_params_close(tmp_path / "ref", tmp_path / "run", rtol=0, atol=0)


def test_schedule_free_state_resumes_bitwise(tmp_path):
  _resume_is_bitwise(tmp_path, "sf_normuon")  # the richest state: z, x, Σ η², NorMuon's


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in ZOO if n != "sf_normuon"])
def test_every_member_resumes_bitwise(tmp_path, name):
  _resume_is_bitwise(tmp_path, name)


def test_mimuon_logs_its_muon_branch_fraction(tmp_path):
  # τ = 0 (every gap is ≥ 0): always the Muon branch; τ huge: never.
  for tau, expected in ((0.0, 1.0), (1e9, 0.0)):
    run = tmp_path / f"tau{tau}"
    summary = training.run(_relu2("runlocal,optimizer=mimuon,steps=20", optimizer__tau=tau), run)
    assert summary["optimizer_state"] == {"muon_branch_fraction/hidden/kernel": [expected]}
    assert wd.read_metrics(run)[-1]["muon_branch_fraction/hidden/kernel"] == expected
  assert training.run(_relu2("runlocal,steps=20"), tmp_path / "adamw")["optimizer_state"] == {}
