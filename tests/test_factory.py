"""optimizers/factory.py: config section -> optax chain, schedules, constraints."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs.common import optimizer_config
from optimizers import domains, factory, microbatch
from tests.references import reference_lion_step


def _params():
  return {
    "hidden": {"kernel": jnp.arange(12.0).reshape(3, 4) / 10, "bias": jnp.ones(4)},
    "head": {"kernel": jnp.ones((4, 1))},
  }


def _one_step(tx, params, grads):
  state = tx.init(params)
  extra = {}
  if microbatch.wants_microbatch_grads(state):  # Two microbatches that average to grads.
    extra["microbatch_grads"] = jax.tree.map(lambda g: jnp.stack([0.5 * g, 1.5 * g]), grads)
  updates, _ = tx.update(grads, state, params, **extra)
  return optax.apply_updates(params, updates)


def test_unknown_optimizer_lists_known_ones():
  with pytest.raises(
    ValueError, match=r"Unknown optimizer 'adamm'; known: \['adamw', 'crossfit_adamw', 'dion'"
  ):
    factory.make_optimizer({"name": "adamm", "learning_rate": 0.1}, 10)


def test_unknown_hyperparameter_is_named():
  with pytest.raises(ValueError, match="Unknown hyperparameter 'eps' for optimizer 'lion'"):
    factory.make_optimizer(dict(optimizer_config("lion"), eps=1e-8), 10)
  with pytest.raises(
    ValueError, match=r"optimizer.schedule='linear' is impossible: it must be one of"
  ):
    factory.make_optimizer(dict(optimizer_config("sgd"), schedule="linear"), 10)


@pytest.mark.parametrize("name", sorted(factory.OPTIMIZERS))
def test_every_optimizer_builds_and_steps(name):
  params = _params()
  # A full-rank gradient: a rank-1 one (all ones) has its one normalized singular value at
  # 1, which Kaon's map sends exactly to 0 (4.1·1·(1 − 1²)² = 0), so Kaon would not move.
  grads = jax.tree.map(lambda p: jnp.sin(1.7 * jnp.arange(p.size).reshape(p.shape)) + 0.5, params)
  new = _one_step(factory.make_optimizer(optimizer_config(name), 100), params, grads)
  for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(params)):
    assert a.shape == b.shape and not np.allclose(a, b)


def test_adamw_matches_optax_with_the_same_numbers():
  params, grads = _params(), jax.tree.map(lambda p: 0.3 * p + 0.1, _params())
  section = dict(optimizer_config("adamw"), learning_rate=0.1, weight_decay=0.5)
  ours = _one_step(factory.make_optimizer(section, 100), params, grads)
  ref = _one_step(optax.adamw(0.1, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.5), params, grads)
  for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(ref)):
    np.testing.assert_allclose(a, b, rtol=1e-6)


def test_lion_step_is_sign_plus_decay():
  params = _params()
  grads = jax.tree.map(lambda p: p - 0.35, params)
  section = dict(optimizer_config("lion"), learning_rate=0.01, weight_decay=2.0)
  new = _one_step(factory.make_optimizer(section, 100), params, grads)
  for p, g, n in zip(jax.tree.leaves(params), jax.tree.leaves(grads), jax.tree.leaves(new)):
    want, _ = reference_lion_step(
      np.asarray(p, np.float64),
      np.asarray(g, np.float64),
      np.zeros(np.shape(p)),
      0.01,
      0.9,
      0.99,
      2.0,
    )
    np.testing.assert_allclose(n, want, rtol=1e-6)


def test_matrices_only_weight_decay_mask():
  params = _params()
  zeros = jax.tree.map(jnp.zeros_like, params)
  section = dict(
    optimizer_config("sgd"),
    momentum=0.0,
    learning_rate=0.1,
    weight_decay=1.0,
    weight_decay_mask="matrices",
  )
  new = _one_step(factory.make_optimizer(section, 10), params, zeros)
  np.testing.assert_allclose(new["hidden"]["kernel"], 0.9 * params["hidden"]["kernel"])
  np.testing.assert_allclose(new["hidden"]["bias"], params["hidden"]["bias"])


def test_gradient_clipping():
  params = {"w": jnp.zeros(4)}
  section = dict(optimizer_config("sgd"), momentum=0.0, learning_rate=1.0, grad_clip_norm=0.5)
  new = _one_step(factory.make_optimizer(section, 10), params, {"w": jnp.full(4, 10.0)})
  np.testing.assert_allclose(jnp.linalg.norm(new["w"]), 0.5, rtol=1e-6)


def test_schedules():
  constant = factory.make_schedule(1.0, 100)
  assert float(constant(0)) == float(constant(99)) == 1.0
  cosine = factory.make_schedule(1.0, 100, "warmup_cosine", warmup_steps=10)
  np.testing.assert_allclose(
    [cosine(0), cosine(5), cosine(10), cosine(55), cosine(100)],
    [0.0, 0.5, 1.0, 0.5, 0.0],
    atol=1e-6,
  )
  wsd = factory.make_schedule(
    2.0, 100, "wsd", warmup_steps=10, decay_fraction=0.2, final_lr_fraction=0.1
  )
  np.testing.assert_allclose(
    [wsd(5), wsd(10), wsd(79), wsd(80), wsd(90), wsd(100)],
    [1.0, 2.0, 2.0, 2.0, 1.1, 0.2],
    atol=1e-6,
  )


def test_implicit_constraints_follow_the_optimizer():
  params = _params()
  muon = factory.implicit_constraints(
    dict(optimizer_config("muon"), weight_decay=0.1, adam_weight_decay=0.01), params
  )
  assert muon["hidden"]["kernel"].k == "nuclear"
  assert muon["hidden"]["kernel"].weight_decay == 0.1
  np.testing.assert_allclose(muon["hidden"]["kernel"].bound, np.sqrt(4 / 3))  # Shape scale.
  assert muon["head"]["kernel"].k == "l1" and muon["head"]["kernel"].weight_decay == 0.01
  adamw = factory.implicit_constraints(dict(optimizer_config("adamw"), weight_decay=0.1), params)
  assert {c.k for c in jax.tree.leaves(adamw)} == {"l1"}
  lion_k = factory.implicit_constraints(
    dict(optimizer_config("lion_k"), k="schatten", p=3.0), params
  )
  assert lion_k["head"]["kernel"].k == "schatten"
  assert lion_k["head"]["kernel"].k_options == {"p": 3.0}


def test_muon_matrices_mask_spares_adamw_vectors():
  """weight_decay_mask="matrices" reaches Muon's AdamW side: its vectors do not
  decay (zero gradients, so the step is the decay alone), and the implicit
  constraint says weight_decay 0 for them."""
  params = _params()
  zeros = jax.tree.map(jnp.zeros_like, params)
  section = dict(
    optimizer_config("muon"),
    learning_rate=0.1,
    weight_decay=0.5,
    adam_weight_decay=0.2,
    weight_decay_mask="matrices",
  )
  new = _one_step(factory.make_optimizer(section, 10), params, zeros)
  np.testing.assert_allclose(new["hidden"]["bias"], params["hidden"]["bias"])
  np.testing.assert_allclose(new["head"]["kernel"], 0.98 * params["head"]["kernel"], rtol=1e-6)
  np.testing.assert_allclose(new["hidden"]["kernel"], 0.95 * params["hidden"]["kernel"], rtol=1e-6)
  cons = factory.implicit_constraints(section, params)
  assert cons["hidden"]["bias"].weight_decay == 0.0
  assert cons["head"]["kernel"].weight_decay == 0.2
  assert cons["hidden"]["kernel"].weight_decay == 0.5


def test_registry_entries_carry_constructor_hyperparameters_and_bias():
  for name, entry in factory.OPTIMIZERS.items():
    assert isinstance(entry, factory.OptimizerEntry), name
    assert callable(entry.constructor) and callable(entry.implicit_bias.constraints)
  assert factory.OPTIMIZERS["lion_k"].hyperparameters is None  # **k_options: any key.
  muon_keys = factory.OPTIMIZERS["muon"].hyperparameters
  assert "adam_weight_decay" in muon_keys and "weight_decay_mask" not in muon_keys
  assert factory.OPTIMIZERS["muon"].scheduled == ("adam_learning_rate",)
  with pytest.raises(ValueError, match="Unknown hyperparameter 'betta' for optimizer 'muon'"):
    factory.check_optimizer_config(dict(optimizer_config("muon"), betta=0.9))


def test_adding_an_optimizer_is_one_registration():
  from optimizers import implicit_bias

  try:
    factory.register_optimizer(
      "signum",
      lambda learning_rate, weight_decay=0.0, mask=None, b1=0.9: factory.OPTIMIZERS[
        "lion"
      ].constructor(learning_rate, b1=b1, b2=b1, weight_decay=weight_decay, mask=mask),
      implicit_bias.ELL_INF,
      {"b1": domains.DECAY},
    )
    section = {"name": "signum", "learning_rate": 0.1, "weight_decay": 0.5, "b1": 0.5}
    factory.check_optimizer_config(section)
    with pytest.raises(ValueError, match=r"it accepts \['b1'\]"):
      factory.check_optimizer_config(dict(section, b2=0.9))
    with pytest.raises(
      ValueError, match=r"optimizer.b1=1.5 is impossible: it must be a number in \[0, 1\)"
    ):
      factory.check_optimizer_config(dict(section, b1=1.5))
    params = _params()
    assert _one_step(factory.make_optimizer(section, 10), params, params)
    assert {c.k for c in jax.tree.leaves(factory.implicit_constraints(section, params))} == {"l1"}
    assert implicit_bias.describe(section) == "K = l1: ‖θ‖∞ ≤ 1/λ (λ = 0.5)"
  finally:
    factory.OPTIMIZERS.pop("signum", None)


def test_a_registration_without_domains_is_refused():
  with pytest.raises(ValueError, match=r"no domain for the hyperparameters \['b1'\]"):
    factory.register_optimizer(
      "nodomain", lambda learning_rate, weight_decay=0.0, mask=None, b1=0.9: None, None, {}
    )
  assert "nodomain" not in factory.OPTIMIZERS


def test_every_registered_hyperparameter_has_a_domain():
  for name, entry in factory.OPTIMIZERS.items():
    assert set(entry.hyperparameters or ()) <= set(entry.domains), name


# (optimizer, key, value, what the one line says): every value outside its domain.
BAD_VALUES = [
  ("adamw", "b1", 1.5, "in [0, 1)"),
  ("adamw", "b2", -0.1, "in [0, 1)"),
  ("adamw", "eps", -1.0, "> 0"),
  ("adamw", "eps", 0.0, "> 0"),
  ("adamw", "learning_rate", 0.0, "> 0"),
  ("adamw", "learning_rate", float("inf"), "finite number > 0"),
  ("adamw", "learning_rate", float("nan"), "finite number > 0"),
  ("adamw", "weight_decay", -0.1, ">= 0"),
  ("adamw", "weight_decay", float("inf"), "finite number >= 0"),
  ("adamw", "final_lr_fraction", -2.0, "in [0, 1]"),
  ("adamw", "final_lr_fraction", 1.5, "in [0, 1]"),
  ("adamw", "decay_fraction", 0.0, "in (0, 1]"),
  ("adamw", "warmup_steps", -1, "an int >= 0"),
  ("adamw", "warmup_steps", 2.5, "an int >= 0"),
  ("adamw", "grad_clip_norm", -1.0, "or 0 to disable clipping"),
  ("adamw", "schedule", "linear", "one of"),
  ("adamw", "mu_dtype", "float77", "dtype name"),
  ("adamw", "nesterov", 1, "True or False"),
  ("lion", "b1", 1.0, "in [0, 1)"),
  ("lion_k", "b2", 2.0, "in [0, 1)"),
  ("lion_k", "ns_steps", 0, "an int >= 1"),
  ("lion_k", "method", "qr", "one of"),
  ("muon", "beta", 1.0, "in [0, 1)"),
  ("muon", "ns_steps", 0, "an int >= 1"),
  ("muon", "adam_eps", 0.0, "> 0"),
  ("muon", "adam_learning_rate", -0.1, "None or a finite number > 0"),
  ("muon", "scale", "huge", "one of"),
  ("sgd", "momentum", 1.0, "in [0, 1)"),
]


@pytest.mark.parametrize("name,key,value,hint", BAD_VALUES)
def test_values_outside_their_domain_are_refused(name, key, value, hint):
  section = dict(optimizer_config(name), **{key: value})
  with pytest.raises(ValueError) as e:
    factory.check_optimizer_config(section)
  message = str(e.value)
  assert f"optimizer.{key}={value!r} is impossible" in message and hint in message
  assert "\n" not in message


def test_the_constructors_own_checks_run_before_training():
  # Options that only the constructor can judge: one line, at validation.
  with pytest.raises(ValueError, match="Unknown K 'l7'"):
    factory.check_optimizer_config(dict(optimizer_config("lion_k"), k="l7"))
  with pytest.raises(ValueError, match="Unknown Newton-Schulz preset 'septic'"):
    factory.check_optimizer_config(dict(optimizer_config("muon"), ns_coeffs="septic"))
  with pytest.raises(ValueError, match="schatten needs 1 < p < inf"):
    factory.check_optimizer_config(dict(optimizer_config("lion_k"), k="schatten", p=1.0))


def test_nexus_values_outside_their_domain_are_refused():
  for key, value in (("inner_learning_rate", 0.0), ("inner_steps", 0), ("normalize", "l2")):
    section = dict(optimizer_config("adamw"), nexus={"enabled": True, key: value})
    with pytest.raises(ValueError, match=f"optimizer.nexus.{key}={value!r} is impossible"):
      factory.check_optimizer_config(section)


def test_sgd_has_no_ball_but_reports_l2():
  cons = factory.implicit_constraints(dict(optimizer_config("sgd"), weight_decay=0.1), _params())
  assert {(c.k, c.kind, c.weight_decay) for c in jax.tree.leaves(cons)} == {("l2", "none", 0.1)}
  adamw = factory.implicit_constraints(optimizer_config("adamw"), _params())
  assert {c.kind for c in jax.tree.leaves(adamw)} == {"ball"}
  with pytest.raises(ValueError, match="Unknown constraint kind 'disc'"):
    factory.Constraint("l1", {}, 0.1, 1.0, kind="disc")


def test_describe_says_the_ball_in_one_line():
  from optimizers.implicit_bias import describe

  muon = dict(optimizer_config("muon"), weight_decay=0.1, adam_weight_decay=0.01)
  assert describe(muon) == (
    "K = nuclear: σ_max(W) ≤ s/λ on Muon matrices (λ = 0.1, s = shape); "
    "‖θ‖∞ ≤ 1/λ_adam on AdamW leaves (λ_adam = 0.01)"
  )
  assert describe(dict(muon, adam_weight_decay=0.0, weight_decay_mask="matrices")) == (
    "K = nuclear: σ_max(W) ≤ s/λ on Muon matrices (λ = 0.1, s = shape); "
    "AdamW leaves free (λ_adam = 0)"
  )
  assert describe(
    dict(optimizer_config("adamw"), weight_decay=0.1, weight_decay_mask="matrices")
  ) == ("K = l1: ‖θ‖∞ ≤ 1/λ on leaves of rank ≥ 2 (λ = 0.1)")
  assert describe(optimizer_config("lion")) == "K = l1: every leaf free (λ = 0)"
  assert describe(dict(optimizer_config("lion_k"), k="schatten", p=3.0, weight_decay=2)) == (
    "K = schatten(p=3.0): ‖σ(W)‖_q ≤ 1/λ (λ = 2)"
  )
  assert describe(dict(optimizer_config("sgd"), weight_decay=0.1)).startswith("no known ball")
  for name in factory.OPTIMIZERS:
    assert "\n" not in describe(dict(optimizer_config(name), weight_decay=0.1))


def test_implicit_constraints_follow_muons_routing():
  params = _params()
  route_all = lambda path, leaf: leaf.ndim >= 2
  cons = factory.implicit_constraints(dict(optimizer_config("muon"), routing=route_all), params)
  assert cons["head"]["kernel"].k == "nuclear"  # The default routing sends "head" to AdamW.
