"""The registry of convex functions K for Lion-K.

Lion-K (Chen, Liu, Liang, Liu, "Lion Secretly Solves Constrained Optimization,
As Lyapunov Predicts", arXiv:2310.05898, 2023) updates with ∇K of a momentum
mix. With decoupled weight decay λ it solves

    min_θ f(θ) + (1/λ)·K*(λθ),

and for K a norm, K* is the indicator of the dual-norm ball, so training ends in
argmin f ∩ {θ : ‖θ‖_{K*} ≤ 1/λ}. Each entry here supplies, per parameter leaf:

- ``value(x)``: K(x), so tests can check ``grad`` against ``jax.grad(value)``;
- ``grad(x)``: ∇K(x) (a subgradient at kinks: sign(0) = 0, 0 ↦ 0);
- ``dual_norm(x)``: the norm whose unit ball is dom K*, i.e. the quantity the
  implicit constraint bounds: λ·dual_norm(θ) ≤ 1. For a norm K it is the dual
  norm; for Huber (not a norm) K* is finite only on the ℓ∞ unit ball, so it is ℓ∞.

K sums over leaves (K(θ) = Σ_leaf K(θ_leaf)), so the dual of the whole tree is
the max over leaves: `dual_norms` returns the per-leaf values. Leading axes of
a matrix leaf (..., m, n) are batch axes (K sums over them, the dual takes the
max); vectors are 1×n matrices, scalars 1×1.
"""

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from optimizers import lapack
from optimizers import orthogonalization as ortho


class KFunction(NamedTuple):
  """One convex K: its value, gradient map and the dual norm of its constraint."""

  name: str
  value: Callable[[jax.Array], jax.Array]
  grad: Callable[[jax.Array], jax.Array]
  dual_norm: Callable[[jax.Array], jax.Array]


K_FUNCTIONS: dict[str, Callable[..., KFunction]] = {}


def register_k(name: str):
  """Decorator: registers a factory ``(**options) -> KFunction`` under ``name``."""

  def wrap(factory):
    K_FUNCTIONS[name] = factory
    return factory

  return wrap


def get_k(name, **options) -> KFunction:
  """The K called ``name`` with its options; a KFunction passes through."""
  if isinstance(name, KFunction):
    if options:
      raise ValueError(f"Options {sorted(options)} given with a ready KFunction.")
    return name
  if name not in K_FUNCTIONS:
    raise ValueError(
      f"Unknown K {name!r} for Lion-K; known: {sorted(K_FUNCTIONS)}. "
      "Register a new one with optimizers.register_k."
    )
  try:
    return K_FUNCTIONS[name](**options)
  except TypeError as e:
    raise ValueError(f"Bad options {sorted(options)} for K={name!r}: {e}") from None


def dual_norms(k, params, **options):
  """Per-leaf K*(θ_leaf) for the K named ``k``: λ times it must be ≤ 1."""
  kfn = get_k(k, **options)
  return jax.tree.map(lambda x: kfn.dual_norm(x).astype(jnp.float32), params)


def _as_matrix(x):
  """Vectors become 1×n matrices and scalars 1×1; matrices stay as they are."""
  return x.reshape((1,) * (2 - x.ndim) + x.shape) if x.ndim < 2 else x


def _safe_div(x, norm):
  return x / jnp.where(norm > 0, norm, 1).astype(x.dtype)


def _f32(x):
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _singular_values(x):
  return jnp.linalg.svd(_f32(_as_matrix(x)), compute_uv=False)


@register_k("l1")
def _l1() -> KFunction:
  """K = ‖x‖₁, ∇K = sign(x): Lion. Dual ℓ∞."""
  return KFunction("l1", lambda x: jnp.sum(jnp.abs(x)), jnp.sign, lambda x: jnp.max(jnp.abs(x)))


@register_k("l2")
def _l2() -> KFunction:
  """K = ‖x‖₂ per tensor, ∇K = x/‖x‖ (normalized momentum). Dual ℓ2."""
  norm = lambda x: jnp.sqrt(jnp.sum(jnp.square(_f32(x))))
  return KFunction("l2", norm, lambda x: _safe_div(x, norm(x)), norm)


@register_k("rownorm")
def _rownorm(axis: int = -1) -> KFunction:
  """K = Σ_rows ‖row‖₂ (ℓ2,1), ∇K normalizes each row (the vectors along
  ``axis``). Dual: the largest row norm (ℓ2,∞)."""
  norms = lambda x: jnp.sqrt(jnp.sum(jnp.square(_f32(x)), axis=axis, keepdims=True))
  return KFunction(
    "rownorm",
    lambda x: jnp.sum(norms(x)),
    lambda x: _safe_div(x, norms(x)),
    lambda x: jnp.max(norms(x)),
  )


@register_k("huber")
def _huber(e: float = 1e-3) -> KFunction:
  """K = Σ h_e(x_i) with h_e(x) = x²/(2e) for |x| ≤ e, |x| − e/2 beyond;
  ∇K = clip(x/e, −1, 1): sign for large entries, linear near zero. K* is
  e·y²/2 on the ℓ∞ unit ball and +∞ off it, so the constraint is ℓ∞."""
  if e <= 0:
    raise ValueError(f"huber needs e > 0, got {e}.")
  value = lambda x: jnp.sum(jnp.where(jnp.abs(x) <= e, jnp.square(x) / (2 * e), jnp.abs(x) - e / 2))
  return KFunction("huber", value, lambda x: jnp.clip(x / e, -1, 1), lambda x: jnp.max(jnp.abs(x)))


@register_k("nuclear")
def _nuclear(
  method: str = "newton_schulz",
  ns_steps: int = 5,
  ns_coeffs="quintic",
  compute_dtype=None,
  gram=None,
  eps: float = 1e-7,
) -> KFunction:
  """K = ‖X‖_* (nuclear), ∇K = U·Vᵀ (Muon's orthogonalization), by
  ``method`` "newton_schulz" (approximate; see optimizers.orthogonalization) or
  "svd" (exact). Dual: the spectral norm σ_max."""
  if method == "newton_schulz":
    ortho.ns_coefficients(ns_coeffs, ns_steps)  # Fail on bad options now.
    orth = functools.partial(
      ortho.newton_schulz,
      steps=ns_steps,
      coeffs=ns_coeffs,
      eps=eps,
      compute_dtype=compute_dtype,
      gram=gram,
    )
  elif method == "svd":
    orth = ortho.polar_svd
  else:
    raise ValueError(
      f"Unknown orthogonalization method {method!r}; known: {ortho.ORTHOGONALIZE_METHODS}."
    )
  grad = lambda x: orth(_as_matrix(x)).reshape(x.shape)
  return KFunction(
    "nuclear", lambda x: jnp.sum(_singular_values(x)), grad, lambda x: jnp.max(_singular_values(x))
  )


@register_k("spectral")
def _spectral() -> KFunction:
  """K = σ_max(X) per matrix, ∇K = u₁v₁ᵀ (rank one, from the SVD). Dual: the
  nuclear norm."""

  def grad(x):
    u, s, vt = lapack.svd(_f32(_as_matrix(x)))
    top = (s[..., :1] > 0).astype(u.dtype)[..., None]
    return (top * u[..., :, :1] @ vt[..., :1, :]).reshape(x.shape).astype(x.dtype)

  return KFunction(
    "spectral",
    lambda x: jnp.sum(jnp.max(_singular_values(x), -1)),
    grad,
    lambda x: jnp.max(jnp.sum(_singular_values(x), -1)),
  )


@register_k("schatten")
def _schatten(p: float = 4.0) -> KFunction:
  """K = ‖σ(X)‖_p (Schatten-p, 1 < p < ∞), ∇K = U·diag(σ^(p−1)/‖σ‖_p^(p−1))·Vᵀ.
  p → 1 is the nuclear norm (Muon), p → ∞ the spectral norm. Dual: Schatten-q,
  1/p + 1/q = 1."""
  if not 1 < p < float("inf"):
    raise ValueError(
      f"schatten needs 1 < p < inf, got p={p} (use k='nuclear' for p=1, k='spectral' for p=inf)."
    )
  q = p / (p - 1)
  pnorm = lambda s, r: jnp.sum(s**r, -1) ** (1 / r)

  def grad(x):
    u, s, vt = lapack.svd(_f32(_as_matrix(x)))
    # Scale by σ_max first so σ^(p−1) cannot overflow or underflow.
    s_rel = _safe_div(s, s[..., :1])
    w = _safe_div(s_rel ** (p - 1), pnorm(s_rel, p)[..., None] ** (p - 1))
    return ((u * w[..., None, :]) @ vt).reshape(x.shape).astype(x.dtype)

  return KFunction(
    "schatten",
    lambda x: jnp.sum(pnorm(_singular_values(x), p)),
    grad,
    lambda x: jnp.max(pnorm(_singular_values(x), q)),
  )
