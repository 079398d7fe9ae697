"""PolarGrad: a NumPy transcription of the authors' rule, the sheet's facts (diag(s) ↦
(Σs)·I on the support, degree-1 homogeneity), the Lion-K identity with K = ½‖·‖_*²,
and the optax compositions (jit, inject_hyperparams, MultiSteps, vmap over seeds, bf16)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from optimizers import domains, get_k, lion_k, muon, registry
from optimizers.polargrad import (
  DOMAINS,
  IMPLICIT_BIAS_NOTE,
  polar_scaled,
  polargrad,
  scale_by_polargrad,
)
from tests.references import QUINTIC, reference_newton_schulz
from tests.zoo_wrappers import normal as _normal
from tests.zoo_wrappers import sin_grad as _grad
from tests.zoo_wrappers import sin_params as _params
from tests.zoo_wrappers import sin_run as _run
from tests.zoo_wrappers import sin_small_params as _small_params
from tests.zoo_wrappers import sin_stepper as _stepper

pytestmark = pytest.mark.usefixtures("compilation_cache")

# f32 against the f64 transcription over 6 steps (weights of size ~1; measured ~3e-7).
ATOL = 5e-6


def _first_update(tx, g, params=None):
  """``tx``'s update of ``g`` from its initial state, jitted (eager ops compile one by one)."""
  return jax.jit(lambda g, p: tx.update(g, tx.init(g), p)[0])(g, params)


def reference_polargrad_step(w, m, lr, beta, wd, polar_first):
  """NumPy transcription of PolarGrad's step (Lau, Long, Su, arXiv:2505.21799;
  timlautk/polargrad polar_grad.py) on one (fan_in, fan_out) matrix, with the
  gradient of Σ sin(w)². Returns (w, m)."""
  g = np.sin(2 * w)

  def polar_and_nuclear(x):
    u, s, vt = np.linalg.svd(x, full_matrices=False)
    return u @ vt, s.sum()

  if polar_first:
    u, nu = polar_and_nuclear(g)
    m = beta * m + (1 - beta) * u
    direction = nu * m
  else:
    m = beta * m + (1 - beta) * g
    u, nu = polar_and_nuclear(m)
    direction = nu * u
  return (1 - lr * wd) * w - lr * direction, m


@pytest.mark.parametrize("polar_first", [False, True])
def test_matches_numpy_reference_and_adamw_elsewhere(polar_first):
  lr, beta, wd = 0.01, 0.9, 0.1
  params = _params()
  trace = _run(polargrad(lr, beta=beta, polar_first=polar_first, weight_decay=wd), params)
  worst = 0.0
  for get in [lambda t: t["dense"]["kernel"], lambda t: t["stack"]]:
    w = np.asarray(get(params), np.float64)
    m = np.zeros_like(w)
    for got in trace[1:]:
      # (L, m, n) is one matrix per leading index.
      flat = zip(w.reshape((-1,) + w.shape[-2:]), m.reshape((-1,) + w.shape[-2:]))
      pairs = [reference_polargrad_step(wi, mi, lr, beta, wd, polar_first) for wi, mi in flat]
      w = np.stack([pair[0] for pair in pairs]).reshape(w.shape)
      m = np.stack([pair[1] for pair in pairs]).reshape(w.shape)
      worst = max(worst, np.abs(np.asarray(get(got), np.float64) - w).max())
  print(f"max |f32 - f64 reference| = {worst:.2e}")
  assert worst < ATOL, worst
  # The bias and the embedding went to optax.adamw (the default routing).
  if polar_first:
    return  # The AdamW side is checked once.
  adam = _run(optax.adamw(lr, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.0), params)[-1]
  for leaf in [lambda t: t["dense"]["bias"], lambda t: t["wte"]["embedding"]]:
    np.testing.assert_allclose(leaf(trace[-1]), leaf(adam), atol=1e-6)


def test_diagonal_momentum_gives_sum_of_singular_values_on_the_support():
  s = np.array([3.0, 2.0, 0.5, 0.0, 0.0])
  g = np.zeros((5, 7))
  g[np.arange(5), np.arange(5)] = s
  opt = scale_by_polargrad(beta=0.0)  # M = G on the first step.
  update = _first_update(opt, {"w": jnp.asarray(g, jnp.float32)})
  want = np.zeros((5, 7))
  want[[0, 1, 2], [0, 1, 2]] = s.sum()
  np.testing.assert_allclose(update["w"], want, atol=1e-5)


@pytest.mark.parametrize("method", ["svd", "newton_schulz"])
def test_degree_one_homogeneous_where_muon_is_degree_zero(method):
  g = {"w": _normal(1003, (2, 6, 9))}
  ours = scale_by_polargrad(method=method)
  direction = jax.jit(lambda c: ours.update(jax.tree.map(lambda x: c * x, g), ours.init(g))[0]["w"])
  base = direction(1.0)
  # Newton–Schulz adds 1e-7 to ‖M‖_F, which breaks exact homogeneity a little.
  rtol = 1e-4 if method == "svd" else 2e-3
  for c in (0.01, 7.0):
    np.testing.assert_allclose(direction(c), c * base, rtol=rtol, atol=rtol * c * abs(base).max())
  theirs = muon(1.0, method="svd", scale="none", routing=lambda path, leaf: True)
  step = jax.jit(lambda c: theirs.update({"w": c * g["w"]}, theirs.init(g), g)[0]["w"])
  np.testing.assert_allclose(step(7.0), step(1.0), atol=1e-5)


def test_newton_schulz_method_matches_numpy_ns5():
  g = np.random.default_rng(1004).standard_normal((10, 6))
  opt = scale_by_polargrad(beta=0.5, method="newton_schulz")
  got = _first_update(opt, {"w": jnp.asarray(g, jnp.float32)})
  m = 0.5 * g
  u = reference_newton_schulz(m, [QUINTIC] * 5)
  np.testing.assert_allclose(got["w"], np.sum(m * u) * u, rtol=1e-4, atol=1e-4)


def test_is_lion_k_with_half_nuclear_squared():
  beta = 0.9
  params = {"a": jnp.zeros((4, 7)), "b": jnp.zeros((3, 5, 2))}
  ours, twin = (
    scale_by_polargrad(beta),
    optax.chain(
      # Lion-K's direction ∇K(b1·m + (1 − b1)·g) with b1 = b2 = β is ∇K(M_t).
      lion_k(1.0, k="half_nuclear_sq", b1=beta, b2=beta),
      optax.scale(-1.0),
    ),
  )
  s1, s2 = ours.init(params), twin.init(params)
  update1, update2 = jax.jit(ours.update), jax.jit(twin.update)
  for seed in range(5):
    g = jax.tree.map(lambda p: _normal(1005 + seed, p.shape), params)
    u1, s1 = update1(g, s1)
    u2, s2 = update2(g, s2, params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), u1, u2)


def test_half_nuclear_sq_k_function_fields():
  kfn = get_k("half_nuclear_sq")
  assert kfn.name == "half_nuclear_sq"
  x = _normal(1006, (5, 8))

  @jax.jit
  def fields(x):
    y, stack = kfn.grad(x), jnp.stack([x, 2 * x])
    return dict(
      grad=y,
      autodiff=jax.grad(kfn.value)(x),
      value=kfn.value(x),
      dual=kfn.dual_norm(x),
      dual_of_grad=kfn.dual_norm(y),
      inner=jnp.sum(x * y),
      stack_value=kfn.value(stack),
      stack_dual=kfn.dual_norm(stack),
      vector_grad=kfn.grad(jnp.array([3.0, 4.0])),
      polar_scaled=polar_scaled(x),
    )

  f = fields(x)
  sv = np.linalg.svd(np.asarray(x, np.float64), compute_uv=False)
  np.testing.assert_allclose(f["grad"], f["autodiff"], rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(f["value"], 0.5 * sv.sum() ** 2, rtol=1e-5)
  np.testing.assert_allclose(f["dual"], sv.max(), rtol=1e-5)
  # Fenchel–Young with equality at Y = ∇K(X), K*(Y) = ½·dual_norm(Y)² = ½‖Y‖_op².
  np.testing.assert_allclose(f["value"] + 0.5 * f["dual_of_grad"] ** 2, f["inner"], rtol=1e-5)
  # Stacked matrices: K sums, the dual norm is the max; a vector is a 1×n matrix.
  np.testing.assert_allclose(f["stack_value"], 2.5 * sv.sum() ** 2, rtol=1e-5)
  np.testing.assert_allclose(f["stack_dual"], 2 * sv.max(), rtol=1e-5)
  np.testing.assert_allclose(f["vector_grad"], [3.0, 4.0], rtol=1e-6)  # ‖v‖·v/‖v‖.
  np.testing.assert_allclose(f["polar_scaled"], f["grad"], rtol=1e-6)


@pytest.mark.slow  # the wrapper checks: `pytest -m slow`
def test_inject_hyperparams_multisteps_and_schedule_under_jit():
  params = _small_params()
  opt = optax.inject_hyperparams(polargrad)(learning_rate=0.02, weight_decay=0.1)
  state = opt.init(params)
  update = jax.jit(opt.update)
  g = _grad(params)
  u1, _ = update(g, state, params)
  state.hyperparams["learning_rate"] = jnp.asarray(0.01, jnp.float32)
  u2, _ = update(g, state, params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(b, 0.5 * a, rtol=1e-5, atol=1e-7), u1, u2)
  # MultiSteps of two equals one step on the mean gradient; a schedule runs.
  g2 = jax.tree.map(jnp.cos, params)
  multi = optax.MultiSteps(polargrad(optax.linear_schedule(0.02, 0.0, 10)), every_k_schedule=2)
  ms = multi.init(params)
  multi_update = jax.jit(multi.update)
  _, ms = multi_update(g, ms, params)
  u_multi, _ = multi_update(g2, ms, params)
  single = polargrad(optax.linear_schedule(0.02, 0.0, 10))
  mean = jax.tree.map(lambda a, b: (a + b) / 2, g, g2)
  u_single, _ = jax.jit(single.update)(mean, single.init(params), params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), u_multi, u_single)


def test_vmap_over_seeds_equals_separate_runs():
  opt = polargrad(0.01, weight_decay=0.1)
  seeds = [_small_params(s) for s in range(3)]
  params_S = jax.tree.map(lambda *xs: jnp.stack(xs), *seeds)

  @jax.jit
  def step_S(params_S, state_S):
    u_S, state_S = jax.vmap(opt.update)(jax.vmap(_grad)(params_S), state_S, params_S)
    return optax.apply_updates(params_S, u_S), state_S

  state_S = jax.vmap(opt.init)(params_S)
  for _ in range(3):
    params_S, state_S = step_S(params_S, state_S)
  step = _stepper(opt)
  for s, p in enumerate(seeds):
    alone = _run(opt, p, steps=3, step=step)[-1]
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a[s], b, atol=1e-5), params_S, alone)


@pytest.mark.slow  # the wrapper checks: `pytest -m slow`
def test_bf16_params_stay_bf16_and_match_f32_loosely():
  lr = 0.01
  p16 = _small_params(dtype=jnp.bfloat16)
  got = _run(polargrad(lr, weight_decay=0.1), p16, steps=4)[-1]
  p32 = jax.tree.map(lambda x: x.astype(jnp.float32), p16)
  want = _run(polargrad(lr, weight_decay=0.1), p32, steps=4)[-1]
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    assert a.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(a, np.float32), b, atol=0.05)


def test_domains_cover_every_hyperparameter_and_errors():
  assert set(DOMAINS) == set(registry.keyword_names(polargrad))
  defaults = {
    "beta": 0.95,
    "method": "svd",
    "polar_first": False,
    "ns_steps": 5,
    "ns_coeffs": "quintic",
    "mu_dtype": None,
    "adam_learning_rate": None,
    "adam_b1": 0.9,
    "adam_b2": 0.95,
    "adam_eps": 1e-8,
    "adam_weight_decay": 0.0,
    "routing": None,
  }
  for key, value in defaults.items():
    assert DOMAINS[key].check(value), key
  assert not DOMAINS["method"].check("qdwh")
  assert not DOMAINS["ns_coeffs"].check("cubicle")
  assert isinstance(DOMAINS["beta"], domains.Domain) and "penalty" in IMPLICIT_BIAS_NOTE
  with pytest.raises(ValueError, match="Unknown PolarGrad method"):
    polargrad(0.1, method="qr")
  with pytest.raises(ValueError, match="needs matrices"):
    polargrad(0.1, routing=lambda path, leaf: True).init({"v": jnp.zeros(3)})
