"""Pion: a NumPy float64 transcription of the authors' step, the sheet's facts
(E₂ᵀE₂ = I + A⁴/4, 4th-order spectral drift, RMS(first-order step) = 0.2·η, the
fixed point of ½‖W‖²), its routing, and jit / inject_hyperparams / MultiSteps /
schedules / vmap over seeds / bf16."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from models.gpt2 import GPT2, GPT2Config, init_params
from optimizers.pion import (
  DOMAINS,
  pion,
  pion_labels,
  rms_scale,
  scale_by_pion,
  times_truncated_exp,
  truncated_exp_times,
)

# Runs of one shape share compiled steps (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("compilation_cache")

# f32 against float64 over 4 steps on O(1) weights: rounding only (measured ≤ 6e-7).
ATOL = 2e-6


def _normal(rng, shape, dtype=jnp.float32):
  """N(0, 1) from NumPy (a seed or a Generator): no eager JAX op per shape."""
  rng = np.random.default_rng(rng) if isinstance(rng, int) else rng
  return jnp.asarray(rng.normal(size=shape), dtype)


def _reference_exp(a, degree):
  """Σ_{k≤degree} A^k/k! with explicit powers (float64)."""
  out, term = np.eye(a.shape[0]), np.eye(a.shape[0])
  for k in range(1, degree + 1):
    term = term @ a / k
    out = out + term
  return out


def reference_pion_step(w, g, st, step, lr, b1, b2, rms, degree, side, momentum, second, eps):
  """One step of the authors' PionOptimizer (megatron-lm/megatron/core/optimizer/
  pion.py) for one (out, in) matrix, in float64: skew generators, lie or
  transported-ambient momentum, RMS scale on the moving sides' base, W ← W·E_in
  then W ← E_out·W. ``step`` counts from 1 (the code's state["step"])."""
  st = dict(st)
  moving = side if side != "alternate" else ("in" if step % 2 == 1 else "out")
  skew = lambda x: x - x.T
  if momentum == "lie":
    st["m_in"] = b1 * st["m_in"] + (1 - b1) * skew(w.T @ g)
    st["m_out"] = b1 * st["m_out"] + (1 - b1) * skew(g @ w.T)
    a_in, a_out = -st["m_in"], -st["m_out"]
    if second:
      st["v_in"] = b2 * st["v_in"] + (1 - b2) * skew(w.T @ g) ** 2
      st["v_out"] = b2 * st["v_out"] + (1 - b2) * skew(g @ w.T) ** 2
      a_in, a_out = a_in / (np.sqrt(st["v_in"]) + eps), a_out / (np.sqrt(st["v_out"]) + eps)
  else:
    st["m"] = b1 * st["m"] + (1 - b1) * g
    gt = st["m"]
    if second:
      st["v"] = b2 * st["v"] + (1 - b2) * st["m"] ** 2
      gt = st["m"] / (np.sqrt(st["v"]) + eps)
    a_in, a_out = -skew(w.T @ gt), -skew(gt @ w.T)
  a_in = a_in if moving in ("both", "in") else np.zeros_like(a_in)
  a_out = a_out if moving in ("both", "out") else np.zeros_like(a_out)
  base = w @ a_in + a_out @ w
  alpha = lr * rms * math.sqrt(w.size) / (np.linalg.norm(base) + 1e-12)
  e_in, e_out = _reference_exp(alpha * a_in, degree), _reference_exp(alpha * a_out, degree)
  if momentum == "ambient":
    st["m"] = e_out @ (st["m"] @ e_in)
  return e_out @ (w @ e_in), st


def _zeros_state(out_dim, in_dim):
  z = lambda n: np.zeros((n, n))
  return {
    "m_in": z(in_dim),
    "m_out": z(out_dim),
    "v_in": z(in_dim),
    "v_out": z(out_dim),
    "m": np.zeros((out_dim, in_dim)),
    "v": np.zeros((out_dim, in_dim)),
  }


CASES = [
  ("both", "lie", False),
  ("both", "lie", True),
  ("in", "lie", False),
  ("out", "lie", True),
  ("alternate", "lie", False),
  ("both", "ambient", False),
  ("alternate", "ambient", True),
]


@pytest.mark.parametrize("side,momentum,second", CASES)
def test_matches_numpy_reference(side, momentum, second):
  lr, b1, b2, rms, degree, eps = 0.05, 0.9, 0.99, 0.2, 2, 1e-8
  # Tall and wide kernels in turn, so both orders of applying the sides run.
  shape = (6, 9) if CASES.index((side, momentum, second)) % 2 else (9, 6)
  rng = np.random.default_rng(CASES.index((side, momentum, second)))
  kernel = _normal(rng, shape)  # flax (in, out)
  grads = _normal(rng, (4, *shape))
  opt = scale_by_pion(lr, b1, b2, rms, degree, side, momentum, second, eps)
  state, update = opt.init(kernel), jax.jit(opt.update)
  w, st = np.asarray(kernel, np.float64).T, _zeros_state(shape[1], shape[0])
  worst = 0.0
  for step in range(1, 5):
    g = grads[step - 1]
    u, state = update(g, state, kernel)
    kernel = kernel + u
    w, st = reference_pion_step(
      w, np.asarray(g, np.float64).T, st, step, lr, b1, b2, rms, degree, side, momentum, second, eps
    )
    worst = max(worst, float(np.abs(np.asarray(kernel).T - w).max()))
  print(f"max |Δ| vs NumPy: {worst:.2e}")  # Shown with pytest -s.
  assert worst < ATOL, worst


def test_stacked_matrices_are_one_matrix_per_leading_index():
  stack = _normal(0, (3, 5, 7))
  g = _normal(1, (3, 5, 7))
  opt = scale_by_pion(0.1, side="alternate")
  update = jax.jit(opt.update)
  u_stack, _ = update(g, opt.init(stack), stack)
  for i in range(3):
    u_i, _ = update(g[i], opt.init(stack[i]), stack[i])
    np.testing.assert_allclose(u_stack[i], u_i, atol=1e-6)


@pytest.mark.parametrize("degree", [1, 2, 3])
def test_truncated_exp_matches_explicit_powers(degree):
  a = np.asarray(_normal(2, (5, 5))) * 0.3
  x = np.asarray(_normal(3, (4, 5)))
  want = _reference_exp(a.astype(np.float64), degree)
  np.testing.assert_allclose(times_truncated_exp(x, a, degree), x @ want, atol=1e-5)
  np.testing.assert_allclose(truncated_exp_times(a, x.T, degree), want @ x.T, atol=1e-5)


def test_truncated_exp_of_a_skew_matrix_is_orthogonal_up_to_a4_over_4():
  """E₂(A)ᵀE₂(A) = E₂(A)E₂(A)ᵀ = I + A⁴/4 for skew A (degree 1 would give I − A²)."""
  b = np.asarray(_normal(4, (6, 6)))
  a = 0.4 * (b - b.T)
  eye = np.eye(6, dtype=np.float32)
  e2 = np.asarray(truncated_exp_times(jnp.asarray(a), jnp.asarray(eye), 2), np.float64)
  a64 = a.astype(np.float64)
  a4 = np.linalg.matrix_power(a64, 4)
  np.testing.assert_allclose(e2.T @ e2, np.eye(6) + a4 / 4, atol=5e-6)
  np.testing.assert_allclose(e2 @ e2.T, np.eye(6) + a4 / 4, atol=5e-6)
  e1 = np.asarray(truncated_exp_times(jnp.asarray(a), jnp.asarray(eye), 1), np.float64)
  np.testing.assert_allclose(e1.T @ e1, np.eye(6) - a64 @ a64, atol=5e-6)


@functools.partial(jax.jit, static_argnums=3)
def _one_step(kernel, g, lr, degree):
  opt = scale_by_pion(lr, degree=degree)  # lr traced: one compile per degree.
  return kernel + opt.update(g, opt.init(kernel), kernel)[0]


def _spectral_drift(lr, degree, seed=5):
  kernel, g = _normal(seed, (12, 8)), _normal(seed + 1, (12, 8))
  before = np.linalg.svd(np.asarray(kernel, np.float64), compute_uv=False)
  after = np.linalg.svd(np.asarray(_one_step(kernel, g, lr, degree), np.float64), compute_uv=False)
  return np.abs(after - before).max() / before.max()


def test_singular_value_drift_is_fourth_order_in_the_step():
  """Halving η divides the drift by 2⁴ = 16 at degree 2 (by 2² = 4 at degree 1),
  while the update itself is first order."""
  ratio2 = _spectral_drift(2.0, 2) / _spectral_drift(1.0, 2)
  ratio1 = _spectral_drift(2.0, 1) / _spectral_drift(1.0, 1)
  assert 13 < ratio2 < 19, ratio2
  assert 3.3 < ratio1 < 4.7, ratio1
  assert _spectral_drift(1.0, 2) < 0.05 * _spectral_drift(1.0, 1)


@pytest.mark.parametrize("side", ["both", "in", "out"])
def test_first_order_step_has_rms_0_2_eta(side):
  """‖W·Â_in + Â_out·W‖_F = 0.2·η·√(out·in), and the whole update is that to first order."""
  lr = 1e-3
  kernel = _normal(7, (9, 5))
  g = _normal(8, (9, 5))
  w, gw = kernel.T, g.T
  a_in = -(w.T @ gw - gw.T @ w) if side != "out" else None
  a_out = -(gw @ w.T - w @ gw.T) if side != "in" else None
  alpha, _, _ = jax.jit(rms_scale, static_argnums=(4,))(w, a_in, a_out, lr, 0.2)
  first = (0 if a_in is None else w @ (alpha * a_in)) + (
    0 if a_out is None else (alpha * a_out) @ w
  )
  want = 0.2 * lr * math.sqrt(9 * 5)
  np.testing.assert_allclose(np.linalg.norm(np.asarray(first)), want, rtol=1e-5)
  opt = scale_by_pion(lr, side=side)
  u, _ = jax.jit(opt.update)(g, opt.init(kernel), kernel)
  np.testing.assert_allclose(np.linalg.norm(np.asarray(u)), want, rtol=1e-3)


@pytest.mark.parametrize(
  "side,momentum,second,b1",
  [("both", "lie", True, 0.9), ("alternate", "lie", False, 0.9), ("both", "ambient", False, 0.0)],
)
def test_fixed_point_of_half_squared_norm(side, momentum, second, b1):
  """f = ½‖W‖²: G = W, so WᵀG and GWᵀ are symmetric, the generators vanish and
  Pion does not move (the RMS scale multiplies a zero generator).

  Only where the symmetry is exact in floating point: with ambient momentum and
  β₁ > 0, m = fl(0.1·W) makes Wᵀm asymmetric by rounding, and the RMS scale
  (÷ ‖base‖ + 1e−12) blows that residue up to a full 0.2·η step, as in the
  authors' code. Nor with the ambient second moment (G̃ ≈ sign(W))."""
  kernel = _normal(9, (7, 4))
  opt = scale_by_pion(0.1, b1=b1, side=side, momentum=momentum, second_moment=second)
  state, update = opt.init(kernel), jax.jit(opt.update)
  w = kernel
  for _ in range(3):
    u, state = update(jax.grad(lambda x: 0.5 * jnp.sum(x**2))(w), state, w)
    w = w + u
  np.testing.assert_allclose(w, kernel, atol=1e-6)


def gpt2_params(seed=0):
  """A small GPT-2 tree of models.gpt2 (its names and shapes, by eval_shape: no
  flax init to run), filled with N(0, 0.02²)."""
  config = GPT2Config(vocab_size=32, block_size=8, n_layer=2, n_head=2, d_model=8)
  shapes = jax.eval_shape(lambda: init_params(GPT2(config), jax.random.PRNGKey(0)))
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: jnp.asarray(0.02 * rng.normal(size=s.shape), s.dtype), shapes)


def test_gpt2_routing_and_the_adamw_side():
  params = gpt2_params()
  labels = pion_labels(params)
  names = {
    jax.tree_util.keystr(p, simple=True, separator="/"): v
    for p, v in jax.tree_util.tree_leaves_with_path(labels)
  }
  assert sorted(k for k, v in names.items() if v == "pion") == sorted(
    f"h_{i}/{m}/kernel"
    for i in range(2)
    for m in ("attn/c_attn", "attn/c_proj", "mlp/c_fc", "mlp/c_proj")
  )
  assert names["wte/embedding"] == names["wpe/embedding"] == names["ln_f/scale"] == "adam"
  # AdamW leaves: optax.adamw with the section's weight decay; Pion leaves: no decay.
  grads = jax.tree.map(lambda p: jnp.ones_like(p) * 0.1, params)
  opt = pion(1e-3, weight_decay=0.1)
  u, _ = jax.jit(opt.update)(grads, opt.init(params), params)
  adamw = optax.adamw(1e-3, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.1)
  want, _ = jax.jit(adamw.update)(grads, adamw.init(params), params)
  np.testing.assert_allclose(u["wte"]["embedding"], want["wte"]["embedding"], rtol=1e-6)
  np.testing.assert_allclose(u["h_0"]["ln_1"]["bias"], want["h_0"]["ln_1"]["bias"], rtol=1e-6)
  assert float(jnp.abs(u["h_0"]["mlp"]["c_fc"]["kernel"]).max()) > 0


def _tree(seed=0):
  rng = np.random.default_rng(seed)
  return {
    "dense": {"kernel": _normal(rng, (6, 8)), "bias": jnp.zeros(8)},
    "stack": _normal(rng, (2, 5, 4)),
  }


def _run(opt, params, grads_seq):
  state, update = opt.init(params), jax.jit(opt.update)
  for g in grads_seq:
    u, state = update(g, state, params)
    params = optax.apply_updates(params, u)
  return params


def _grads(params, n, seed=11):
  rng = np.random.default_rng(seed)
  return [jax.tree.map(lambda p: _normal(rng, p.shape, p.dtype), params) for _ in range(n)]


@pytest.mark.slow  # the wrapper checks: `pytest -m slow`
def test_inject_hyperparams_schedule_and_multisteps():
  params = _tree()
  grads = _grads(params, 4)
  sched = optax.linear_schedule(0.05, 0.01, 4)
  injected = optax.inject_hyperparams(pion, static_args=("degree",))(
    learning_rate=sched, side="alternate", b1=0.8
  )
  again = _run(pion(sched, side="alternate", b1=0.8), params, grads)
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), _run(injected, params, grads), again
  )
  # MultiSteps(k=2) on (g, g') is one step on their mean.
  multi = _run(optax.MultiSteps(pion(0.05), 2), params, grads[:2])
  mean = jax.tree.map(lambda a, b: (a + b) / 2, grads[0], grads[1])
  one = _run(pion(0.05), params, [mean])
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), multi, one)


def test_vmap_over_seeds_matches_each_seed():
  seeds = [_tree(s) for s in range(3)]
  params_S = jax.tree.map(lambda *x: jnp.stack(x), *seeds)
  grads = [_grads(p, 3, seed=20 + i) for i, p in enumerate(seeds)]
  grads_S = [jax.tree.map(lambda *x: jnp.stack(x), *(g[t] for g in grads)) for t in range(3)]
  opt = pion(0.05, side="alternate", momentum="ambient")
  state, update = jax.vmap(opt.init)(params_S), jax.jit(jax.vmap(opt.update))
  p_S = params_S
  for g in grads_S:
    u, state = update(g, state, p_S)
    p_S = optax.apply_updates(p_S, u)
  for i in range(3):
    want = _run(opt, seeds[i], grads[i])
    jax.tree.map(lambda a, b, i=i: np.testing.assert_allclose(a[i], b, atol=1e-6), p_S, want)


@pytest.mark.slow  # the wrapper checks: `pytest -m slow`
def test_bf16_params_run_in_f32_and_stay_bf16():
  params = _tree()
  params16 = jax.tree.map(lambda p: p.astype(jnp.bfloat16), params)
  grads = _grads(params, 3)
  out16 = _run(
    pion(0.05), params16, [jax.tree.map(lambda g: g.astype(jnp.bfloat16), g) for g in grads]
  )
  out32 = _run(pion(0.05), params, grads)
  assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(out16))
  np.testing.assert_allclose(
    np.asarray(out16["dense"]["kernel"], np.float32), out32["dense"]["kernel"], atol=0.05
  )


def test_bad_options_fail_at_construction_and_domains_cover_every_keyword():
  with pytest.raises(ValueError, match="Unknown Pion side"):
    pion(0.1, side="left")
  with pytest.raises(ValueError, match="degree"):
    pion(0.1, degree=0)
  with pytest.raises(ValueError, match="needs the params"):
    opt = scale_by_pion(0.1)
    opt.update(jnp.ones((3, 3)), opt.init(jnp.ones((3, 3))))
  import inspect

  keywords = set(inspect.signature(pion).parameters) - {"learning_rate", "weight_decay", "mask"}
  assert keywords == set(DOMAINS)
  assert DOMAINS["degree"].check(2) and not DOMAINS["side"].check("left")
