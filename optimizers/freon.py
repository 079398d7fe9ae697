"""Freon (Shumaylov et al. 2026): Muon with the singular values raised to q − 1.

From "Muon is Not That Special" (Shumaylov et al., arXiv:2605.11181). No authors'
code was found: this follows the reconstruction in the zoo's reference sheet
(confidence B/C). Muon's momentum and Nesterov (`optimizers.kaon.
scale_by_muon_momentum_map`), then, for the mix u = U·Σ·Vᵀ with r = min(m, n):

    O = U·Σ^{q−1}·Vᵀ / (mean_{i ≤ r} σ_i^q)^{(q−1)/q}  = (uuᵀ)^{−c}·u / (same),  c = 1 − q/2
    θ_t = θ_{t−1} − η·(s·O_t + λ·θ_{t−1})

The divisor (the reconstruction's) makes O scale-free; its mean is over all r
singular values, zeros included. q = 2 is SGD on the
normalized momentum (O = √r·u/‖u‖_F), q = 1 is Muon (O = U·Vᵀ), q < 1 the
quasi-norm regime where σ ↦ σ^{q−1} is decreasing: small directions are amplified.

Lion-K. O = ∇K(u) for K(X) = r·(mean σ_i^q)^{1/q} = r^{(q−1)/q}·‖σ(X)‖_q. For q ≥ 1
that is r^{(q−1)/q} times the Schatten-q norm: ``get_k("schatten", p=q).grad``
(k_functions) is U·diag(σ^{q−1}/‖σ‖_q^{q−1})·Vᵀ, and O = r^{(q−1)/q}·that (q = 1:
``get_k("nuclear")``, r⁰ = 1). So Freon with q ≥ 1 is Lion-K (b1 = β², b2 = β with
Nesterov) with a scaled Schatten norm, and with decoupled weight decay its iterates
end in λ·‖σ(θ)‖_{q*} ≤ s·r^{(q−1)/q}, 1/q + 1/q* = 1, i.e. the power mean of order q*
of σ(θ) is ≤ s/λ (q = 1: σ_max ≤ s/λ, Muon's ball; q = 2: RMS of σ ≤ s/λ).
`lion_k_equivalent` gives that K, its options and the bound. For q < 1 K is not
convex and Lion-K says nothing. The update computes O itself (one formula for every
q, traceable in q) rather than calling the Schatten K, which refuses p ≤ 1 and
traced p; tests check it equals r^{(q−1)/q}·schatten's ∇K and Lion-K's trajectory.

Methods:
- ``"svd"`` (default): exact from the thin SVD in f32; singular values below the
  numerical-rank tolerance (σ_max·max(m, n)·eps, as `polar_svd`) are dropped, so a
  rank-deficient u keeps its zero singular values at zero for every q.
- ``"newton"``: matmul-only. c = a/p is written as a fraction (p ≤ 64, so q must be
  a static Python number with 1 − q/2 such a fraction: 2/3, 1/2, 1, 3/2, ...); on
  the wide orientation X = u/‖u‖_F, A = XXᵀ + ε·‖XXᵀ‖_F·I (m × m), the coupled
  Newton iteration for the inverse p-th root (Guo & Higham, "A Schur–Newton Method
  for the Matrix p-th Root and its Inverse", SIAM J. Matrix Anal. Appl. 28, 2006)

      R_0 = z^{1/p}·I, M_0 = z·A, z = 1/‖A‖_F;   T = ((p + 1)·I − M_k)/p,
      R_{k+1} = R_k·T, M_{k+1} = T^p·M_k            (M_k = R_k^p·A → I, R_k → A^{−1/p})

  then O_raw = R^a·X (A^k·R^{a+pk}·X for c < 0) and the divisor from the trace:
  mean σ^q = ⟨O_raw, X⟩/r. It converges quadratically once M's eigenvalues near 1;
  from the smallest, about ε, it needs about ln(1/ε)/ln(((p+1)/p)^p) + 4 steps: the
  defaults ``steps=24``, ``eps=1e-7`` converge every eigenvalue for every p. So it
  computes (uuᵀ + δI)^{−c}·u exactly: singular values with σ/σ_max ≲ √ε ≈ 3e-4 are
  damped instead of amplified (the SVD amplifies everything above its rank
  tolerance), and forming A in f32 squares the condition number. Measured against
  the SVD (max entry error / max entry, q = 2/3, f32, Gaussian matrices): 2e-6 at
  σ_max/σ_min ≈ 3 (8×16, 64×256), 1e-4 to 1.5e-3 at 50 to 120 (32×32), 1e-2 at 260
  (64×64), 0.2 at 1400 (where the SVD weights the smallest direction 1400^{1/3} ≈ 11×
  the largest); 2e-2 on a rank-3 16×32 (rounding-level directions amplified to ~1e-3 of the
  top). A larger ``eps`` damps more; a smaller one amplifies rounding. It is not
  the paper's QDWH-type iteration (a rational one, needing QR or Cholesky), whose
  details were not recovered; the method's name says what it is.

Layout: O(uᵀ) = O(u)ᵀ, so the flax (fan_in, fan_out) layout gives the transpose of
the paper's (out, in) update; leaves (L, m, n) are L matrices. Leaves
`default_muon_routing` (or ``routing``) does not select go to AdamW.
"""

import fractions
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from optimizers import domains, lapack
from optimizers.kaon import scale_by_muon_momentum_map
from optimizers.muon import (
  MUON_SCALES,
  scale_by_shape,
  shape_scale,
)
from optimizers.orthogonalization import frobenius_inner
from optimizers.zoo_common import ADAM_DOMAINS, ROUTING_DOMAIN, adamw_side, routed

FREON_METHODS = ("svd", "newton")
_MAX_ROOT = 64  # The largest p of c = a/p the "newton" method accepts.


def _f32(x):
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _divide_by_power_mean(o_MxN, x_MxN, q):
  """O_raw / (mean σ^q)^{(q−1)/q}, with mean σ^q = ⟨O_raw, X⟩/r (O_raw = X's σ^{q−1})."""
  r = min(x_MxN.shape[-2:])
  mean_q = frobenius_inner(o_MxN, x_MxN) / r  # not jnp.sum: see frobenius_inner
  safe = jnp.where(mean_q > 0, mean_q, 1.0)
  return jnp.where(mean_q > 0, o_MxN / safe ** ((q - 1) / q), 0.0)


def _freon_svd(x, q):
  u, s, vt = lapack.svd(x)
  tol = s[..., :1] * max(x.shape[-2:]) * jnp.finfo(x.dtype).eps
  keep = s > tol
  # Relative to σ_max (O is scale-free), and 1 where dropped, so no 0^(q−1) = inf.
  s_rel = jnp.where(keep, s / jnp.where(keep[..., :1], s[..., :1], 1.0), 1.0)
  w = jnp.where(keep, s_rel ** (q - 1), 0.0)
  mean_q = jnp.sum(jnp.where(keep, s_rel**q, 0.0), -1, keepdims=True) / s.shape[-1]
  safe = jnp.where(mean_q > 0, mean_q, 1.0)
  w = w / safe ** ((q - 1) / q)
  return (u * w[..., None, :]) @ vt


def newton_exponent(q: float) -> tuple[int, int]:
  """(a, p) with a/p = c = 1 − q/2 and 1 ≤ p ≤ 64, for the "newton" method."""
  if not isinstance(q, (int, float)):  # A jax array, as optax.inject_hyperparams makes it.
    raise ValueError(
      "Freon's method='newton' needs q as a Python number: under "
      "optax.inject_hyperparams list 'q' in static_args (or use method='svd')."
    )
  q = float(q)
  if not (math.isfinite(q) and q > 0):
    raise ValueError(f"Freon needs a finite q > 0, got q={q}.")
  c = 1 - q / 2
  frac = fractions.Fraction(c).limit_denominator(_MAX_ROOT)
  if abs(float(frac) - c) > 1e-9:
    near = 2 * (1 - frac)
    raise ValueError(
      f"Freon's method='newton' needs 1 - q/2 = a/p with p <= {_MAX_ROOT}; q={q} is not "
      f"(nearest: q = {near} = {float(near):.6g}). Use that q or method='svd'."
    )
  return frac.numerator, frac.denominator


def _matrix_power(x_MxM, k: int):
  """x^k for a static k ≥ 0, by repeated squaring."""
  out, base = None, x_MxM
  while k:
    if k & 1:
      out = base if out is None else out @ base
    k >>= 1
    if k:
      base = base @ base
  return (
    jnp.broadcast_to(jnp.eye(x_MxM.shape[-1], dtype=x_MxM.dtype), x_MxM.shape)
    if out is None
    else out
  )


def inverse_root(a_MxM, p: int, steps, eps: float = 1e-7):
  """(A + δI)^{−1/p} of symmetric PSD matrices A (..., m, m), δ = eps·‖A‖_F, by the
  coupled Newton iteration (module docstring); ``steps`` may be traced."""
  fro = jnp.sqrt(frobenius_inner(a_MxM, a_MxM))
  eye_MxM = jnp.eye(a_MxM.shape[-1], dtype=a_MxM.dtype)
  # A zero matrix becomes I, so R stays finite (it then multiplies a zero X).
  a_MxM = a_MxM + jnp.where(fro > 0, eps * fro, 1.0) * eye_MxM
  z = 1 / jnp.sqrt(frobenius_inner(a_MxM, a_MxM))

  def step(_, carry):
    r_MxM, m_MxM = carry
    t_MxM = ((p + 1) * eye_MxM - m_MxM) / p
    return r_MxM @ t_MxM, _matrix_power(t_MxM, p) @ m_MxM

  r0_MxM = z ** (1 / p) * jnp.broadcast_to(eye_MxM, a_MxM.shape)
  r_MxM, _ = jax.lax.fori_loop(0, steps, step, (r0_MxM, z * a_MxM))
  return r_MxM, a_MxM


def _freon_newton(x, q, steps, eps):
  a, p = newton_exponent(q)
  transpose = x.shape[-2] > x.shape[-1]
  x_MxN = jnp.swapaxes(x, -1, -2) if transpose else x
  norm = jnp.sqrt(jnp.sum(jnp.square(x_MxN), axis=(-2, -1), keepdims=True))
  x_MxN = x_MxN / jnp.where(norm > 0, norm, 1.0)
  if a == 0:  # q = 2: c = 0, O_raw = X.
    o_MxN = x_MxN
  else:
    r_MxM, a_MxM = inverse_root(x_MxN @ jnp.swapaxes(x_MxN, -1, -2), p, steps, eps)
    k = max(0, -(a // p))  # c < 0 (q > 2): A^{−c} = A^k·R^{a + pk}, a + pk ≥ 0.
    o_MxN = _matrix_power(r_MxM, a + p * k) @ x_MxN
    if k:
      o_MxN = _matrix_power(a_MxM, k) @ o_MxN
  o_MxN = _divide_by_power_mean(o_MxN, x_MxN, q)
  return jnp.swapaxes(o_MxN, -1, -2) if transpose else o_MxN


def freon_map(
  x: jax.Array, q: float = 2 / 3, method: str = "svd", steps: int = 24, eps: float = 1e-7
) -> jax.Array:
  """Freon's O = U·Σ^{q−1}·Vᵀ/(mean σ^q)^{(q−1)/q} of every matrix in ``x``
  (..., m, n), in f32. ``steps`` and ``eps`` are the "newton" method's."""
  x = _f32(x)
  if method == "svd":
    return _freon_svd(x, q)
  if method == "newton":
    return _freon_newton(x, q, steps, eps)
  raise ValueError(f"Unknown Freon method {method!r}; known: {FREON_METHODS}.")


def lion_k_equivalent(q: float, shape, scale: str = "none") -> tuple[str, dict, float] | None:
  """(k, k_options, bound) of the Lion-K K whose ∇K is s·O on a leaf of ``shape``
  (..., fan_in, fan_out), for q ≥ 1: ∇K = bound·∇K_registered, so the implicit
  constraint is λ·dual_norm(θ) ≤ bound with k_functions' dual_norm of ``k``. None for
  q < 1 (K not convex: no known bias)."""
  if q < 1:
    return None
  s = shape_scale(shape, scale)
  if q == 1:
    return "nuclear", {}, s
  return "schatten", {"p": float(q)}, s * min(shape[-2:]) ** ((q - 1) / q)


def scale_by_freon(
  q: float = 2 / 3,
  beta: float = 0.95,
  nesterov: bool = True,
  method: str = "svd",
  steps: int = 24,
  eps: float = 1e-7,
  mu_dtype: Any | None = None,
  owner_layout: bool | None = None,
) -> optax.GradientTransformation:
  """Freon's direction O = `freon_map`(u) of Muon's momentum mix u (module docstring)."""
  if method not in FREON_METHODS:
    raise ValueError(f"Unknown Freon method {method!r}; known: {FREON_METHODS}.")
  if isinstance(q, (int, float)) and not q > 0:
    raise ValueError(f"Freon needs q > 0, got q={q}.")
  if method == "newton":
    newton_exponent(q)  # Fail on a q it cannot take now, not at update.
  return scale_by_muon_momentum_map(
    lambda u: freon_map(u, q, method, steps, eps), beta, nesterov, mu_dtype, "Freon", owner_layout
  )


def freon(
  learning_rate: optax.ScalarOrSchedule,
  q: float = 2 / 3,
  beta: float = 0.95,
  nesterov: bool = True,
  method: str = "svd",
  steps: int = 24,
  eps: float = 1e-7,
  weight_decay: float = 0.0,
  mask=None,
  scale: str = "none",
  mu_dtype: Any | None = None,
  adam_learning_rate: optax.ScalarOrSchedule | None = None,
  adam_b1: float = 0.9,
  adam_b2: float = 0.95,
  adam_eps: float = 1e-8,
  adam_weight_decay: float = 0.0,
  routing: Callable[[Any, Any], bool] | None = None,
  owner_layout: bool | None = None,
) -> optax.GradientTransformation:
  """Freon on the leaves ``routing`` selects, AdamW on the others.

  θ ← θ − η·(s·U·Σ^{q−1}·Vᵀ/(mean σ^q)^{(q−1)/q} + λ·θ) (module docstring).

  Args:
    learning_rate: η of the Freon side (a float or an optax schedule).
    q: the exponent (> 0); 1 is Muon with an exact polar factor.
    beta, nesterov: Muon's momentum.
    method: "svd" (exact; q may be traced) or "newton" (matmul-only; q static,
      under `optax.inject_hyperparams` list it in ``static_args``).
    steps, eps: the "newton" iteration count and relative regularization ε.
    weight_decay: λ of the Freon side, multiplied by η.
    mask: which leaves decay (a pytree of bools or a function of the params), on
      both sides, as `optimizers.muon.muon`'s ``weight_decay_mask``.
    scale: Muon's per-matrix factor s ("shape", "rms_match" or "none").
    mu_dtype: dtype of the momenta (Freon's default: float32).
    adam_learning_rate: AdamW's η (default: ``learning_rate``).
    adam_b1, adam_b2, adam_eps, adam_weight_decay: AdamW's hyperparameters.
    routing: ``routing(path, leaf) -> bool``, True for Freon; None is
      `optimizers.muon.default_muon_routing`. Under `optax.inject_hyperparams` list
      it in ``static_args``.
    owner_layout: the map (SVD or the Newton iteration) on same-shape matrices stacked,
      whole matrices per device (`optimizers.owner_layout`: no collective inside the
      iteration) under the ambient mesh; None: on under FSDP.
  """
  shape_scale((1, 1), scale)  # Fail on an unknown name now, not at update.
  matrix_side = optax.chain(
    scale_by_freon(q, beta, nesterov, method, steps, eps, mu_dtype, owner_layout),
    scale_by_shape(scale),
    optax.add_decayed_weights(weight_decay, mask),
    optax.scale_by_learning_rate(learning_rate),
  )
  adam_side = adamw_side(
    learning_rate if adam_learning_rate is None else adam_learning_rate,
    adam_b1,
    adam_b2,
    adam_eps,
    adam_weight_decay,
    mask,
    mu_dtype,
  )
  return routed(matrix_side, adam_side, routing)  # Muon's labels: Muon's state tree shape.


# The values a config may give each hyperparameter (optimizers.domains).
DOMAINS = {
  "q": domains.positive(),
  "beta": domains.DECAY,
  "nesterov": domains.boolean(),
  "method": domains.one_of(FREON_METHODS),
  "steps": domains.integer(1),
  "eps": domains.positive(),
  "scale": domains.one_of(MUON_SCALES),
  "mu_dtype": domains.DTYPE,
  **ADAM_DOMAINS,
  "routing": ROUTING_DOMAIN,
  "owner_layout": domains.optional(domains.boolean()),
}

IMPLICIT_BIAS_NOTE = (
  "For q ≥ 1 Freon is Lion-K with K = r^{(q−1)/q}·(Schatten-q norm), so weight decay λ confines "
  "each matrix to λ·‖σ(θ)‖_{q*} ≤ s·r^{(q−1)/q} (q = 1: Muon's σ_max ≤ s/λ; see "
  "lion_k_equivalent); for q < 1 K is not convex and no implicit bias is known."
)
