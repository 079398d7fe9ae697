"""The implicit constraint of Lion-K with weight decay λ: training ends in
{θ : λ·K*(θ) ≤ 1}, at the constrained minimizer (Chen et al. 2023)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optimizers import dual_norms, lion, lion_k, muon
from tests.references import QUINTIC, composed_polynomial, reference_project_spectral

LAMBDA = 0.5  # Ball radius 1/λ = 2.


def _train(opt, target, steps, init):
  loss = lambda w: sum(
    0.5 * jnp.sum((a - b) ** 2) for a, b in zip(jax.tree.leaves(w), jax.tree.leaves(target))
  )

  def body(carry, _):
    w, state = carry
    u, state = opt.update(jax.grad(loss)(w), state, w)
    return (optax.apply_updates(w, u), state), None

  (w, _), _ = jax.jit(lambda w: jax.lax.scan(body, (w, opt.init(w)), None, length=steps))(init)
  return w


def _schedule(steps):
  return optax.cosine_decay_schedule(0.05, steps, alpha=0.0)


def test_lion_ends_in_the_linf_ball_at_the_clipped_minimum():
  target = jax.random.normal(jax.random.PRNGKey(0), (8, 6)) * 3.0  # Many |θ*| > 2.
  assert float(jnp.abs(target).max()) * LAMBDA > 1.5
  steps = 3000
  for opt in (
    lion(_schedule(steps), weight_decay=LAMBDA),
    lion_k(_schedule(steps), k="l1", weight_decay=LAMBDA),
  ):
    w = _train(opt, target, steps, jnp.zeros_like(target))
    assert LAMBDA * float(dual_norms("l1", w)) <= 1 + 1e-6
    np.testing.assert_allclose(w, jnp.clip(target, -1 / LAMBDA, 1 / LAMBDA), atol=0.02)


def _matrix_target():
  """W* = U·diag(σ*)·Vᵀ with σ* = (6, 4, 1.5, 0.5): two above 1/λ = 2."""
  rng = np.random.default_rng(1)
  u = np.linalg.qr(rng.normal(size=(6, 4)))[0]
  v = np.linalg.qr(rng.normal(size=(4, 4)))[0]
  return u, np.array([6.0, 4.0, 1.5, 0.5]), v


def test_muon_svd_ends_in_the_spectral_ball_at_the_clipped_minimum():
  u, s, v = _matrix_target()
  target = jnp.asarray(u @ np.diag(s) @ v.T, jnp.float32)
  steps = 3000
  route_all = lambda path, leaf: True
  opt = muon(_schedule(steps), method="svd", weight_decay=LAMBDA, scale="none", routing=route_all)
  w = _train(opt, {"w": target}, steps, {"w": jnp.zeros_like(target)})["w"]
  assert LAMBDA * float(dual_norms("nuclear", w)) <= 1 + 1e-5
  np.testing.assert_allclose(w, reference_project_spectral(target, 1 / LAMBDA), atol=0.03)


def test_newton_schulz_muon_overshoots_by_its_largest_output_singular_value():
  """With the quintic iteration the radius is not 1/λ but (max NS output)/λ:
  the momentum settles near rank deficient directions whose NS image is > 1.
  Record it: λ·σ_max lies in (1, sup p⁵] with sup p⁵ = 1.2024 (over all inputs)."""
  u, s, v = _matrix_target()
  target = jnp.asarray(u @ np.diag(s) @ v.T, jnp.float32)
  steps = 3000
  opt = muon(_schedule(steps), weight_decay=LAMBDA, scale="none", routing=lambda path, leaf: True)
  w = _train(opt, {"w": target}, steps, {"w": jnp.zeros_like(target)})["w"]
  grid = composed_polynomial(np.linspace(1e-6, 1, 100_001), [QUINTIC] * 5)
  overshoot = LAMBDA * float(dual_norms("nuclear", w))
  print(f"Newton-Schulz Muon: lambda * sigma_max = {overshoot:.4f}")
  assert 1.0 < overshoot <= grid.max() + 1e-3
