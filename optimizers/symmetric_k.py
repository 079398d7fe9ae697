"""The K functions of the symmetry-compatible updates (Lau & Su, arXiv:2605.18106),
registered for Lion-K: "centered_rownorm", "right_spectral", "left_spectral" and
"hybrid_rownorm_spectral" (the last is not ∇K of a convex K: its value is
⟨x, grad(x)⟩ and its dual a data-dependent σ_max radius), with the row maps
and the Chebyshev radius they rest on. `optimizers.symmetric` routes GPT-2's
parameter classes to them.
"""

import functools

import jax
import jax.numpy as jnp

from optimizers import domains
from optimizers import orthogonalization as ortho
from optimizers.k_functions import KFunction, register_k


def _as_matrix(x):
  """Vectors become 1×n matrices and scalars 1×1 (as the other K functions)."""
  return x.reshape((1,) * (2 - x.ndim) + x.shape) if x.ndim < 2 else x


def _f32(x):
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _center(x_RxC):
  """Π·x: subtract the mean over the rows (axis −2), invariant to x + 1cᵀ."""
  return x_RxC - jnp.mean(x_RxC, axis=-2, keepdims=True)


def _row_norms(x_RxC):
  return jnp.sqrt(jnp.sum(jnp.square(x_RxC), axis=-1, keepdims=True))


def row_normalize(x_RxC, eps: float = 1e-8):
  """Each row over (‖row‖₂ + ε); a zero row stays zero."""
  norms = _row_norms(x_RxC)
  return x_RxC / jnp.where(norms + eps > 0, norms + eps, 1.0)


def _inner(x, y):
  return ortho.frobenius_inner(x, y)  # not jnp.sum: see its docstring (XLA:CPU)


def chebyshev_radius(x_RxC, iters: int = 500):
  """min_c max_i ‖x_i − c‖₂ over the rows x_i of each matrix (…, R, C): the
  radius of the smallest ball around the rows. Frank–Wolfe with away steps and
  exact line search on the dual max_{w ∈ simplex} Σ w_i‖x_i − c(w)‖², c(w) = Σ w_i x_i
  (Yildirim, "Two algorithms for the minimum enclosing ball problem", SIAM J. Optim.
  2008, Algorithm 2: linear convergence); returns the best primal bound
  max_i ‖x_i − c‖, an upper bound that converges to the radius."""
  x = _f32(_as_matrix(x_RxC))
  rows = x.shape[-2]
  w = jnp.full(x.shape[:-1], 1.0 / rows, x.dtype)

  def body(_, carry):
    w, best = carry
    c = jnp.einsum("...r,...rc->...c", w, x)
    d2_R = jnp.sum(jnp.square(x - c[..., None, :]), axis=-1)
    phi = jnp.sum(w * d2_R, axis=-1)  # The dual value: a lower bound on radius².
    far = jnp.argmax(d2_R, axis=-1)
    near = jnp.argmin(jnp.where(w > 0, d2_R, jnp.inf), axis=-1)
    d_far = jnp.take_along_axis(d2_R, far[..., None], -1)[..., 0]
    d_near = jnp.take_along_axis(d2_R, near[..., None], -1)[..., 0]
    w_near = jnp.take_along_axis(w, near[..., None], -1)[..., 0]
    safe_phi = jnp.where(phi > 0, phi, 1.0)
    up, down = d_far / safe_phi - 1.0, 1.0 - d_near / safe_phi
    toward = up >= down
    alpha = up / (2.0 * (1.0 + up))  # Toward the farthest row.
    beta = jnp.minimum(down / (2.0 * jnp.maximum(1.0 - down, 1e-30)), w_near / (1.0 - w_near))
    e_far = jax.nn.one_hot(far, rows, dtype=x.dtype)
    e_near = jax.nn.one_hot(near, rows, dtype=x.dtype)
    toward_w = (1.0 - alpha)[..., None] * w + alpha[..., None] * e_far
    away_w = (1.0 + beta)[..., None] * w - beta[..., None] * e_near
    new_w = jnp.where(toward[..., None], toward_w, jnp.maximum(away_w, 0.0))
    w = jnp.where((phi > 0)[..., None], new_w, w)
    return w, jnp.minimum(best, d_far)

  init = (w, jnp.full(x.shape[:-2], jnp.inf, x.dtype))
  _, best = jax.lax.fori_loop(0, iters, body, init)
  return jnp.sqrt(best)


def _orth_fn(method: str, ns_steps: int, ns_coeffs, compute_dtype):
  if method == "newton_schulz":
    ortho.ns_coefficients(ns_coeffs, ns_steps)  # Fail on bad options now, not at update.
    return functools.partial(
      ortho.newton_schulz, steps=ns_steps, coeffs=ns_coeffs, compute_dtype=compute_dtype
    )
  if method == "svd":
    return ortho.polar_svd
  raise ValueError(
    f"Unknown orthogonalization method {method!r}; known: {ortho.ORTHOGONALIZE_METHODS}."
  )


def _nu_polar(x_MxN, orth):
  """(ν·polar(X), ν) with ν = ⟨X, polar(X)⟩ per matrix (the nuclear norm when exact)."""
  u = orth(x_MxN)
  nu = _inner(x_MxN, u)
  return nu * u, nu


def _singular_values(x):
  return jnp.linalg.svd(_f32(_as_matrix(x)), compute_uv=False)


def _matrix_map(fn):
  """Applies fn to x as a (…, m, n) matrix in f32 and returns x's shape and dtype."""
  return lambda x: fn(_f32(_as_matrix(x))).reshape(x.shape).astype(x.dtype)


def _row_k(eps: float, center: bool, recenter: bool, name: str, dual_iters: int = 500):
  """The (centered) row-norm K: Σ_i h(‖(Πx)_i‖), h(t) = t − ε·log(1 + t/ε)."""

  def prepare(x):
    return _center(x) if center else x

  def grad(x):
    u = row_normalize(prepare(x), eps)
    return _center(u) if center and recenter else u

  def value(x):
    # A zero row (every row of a centered 1×n vector) gets the subgradient 0, not NaN.
    sq = jnp.sum(jnp.square(prepare(_f32(_as_matrix(x)))), axis=-1)
    t = jnp.where(sq > 0, jnp.sqrt(jnp.where(sq > 0, sq, 1.0)), 0.0)
    # jnp.where, not `if`: eps may be traced (optax.inject_hyperparams).
    smooth = t - eps * jnp.log1p(t / jnp.where(eps > 0, eps, 1.0))
    return jnp.sum(jnp.where(eps > 0, smooth, t))

  def dual_norm(x):
    x = _f32(_as_matrix(x))
    if center:
      return jnp.max(chebyshev_radius(x, dual_iters))
    return jnp.max(_row_norms(x))

  return KFunction(name, value, _matrix_map(grad), dual_norm)


@register_k("centered_rownorm")
def _centered_rownorm(eps: float = 1e-8, recenter: bool = True, dual_iters: int = 500) -> KFunction:
  """Row normalization of the row-centered momentum (module docstring)."""
  if domains.is_number(eps) and eps < 0:
    raise ValueError(f"centered_rownorm needs eps >= 0, got {eps}.")
  return _row_k(eps, True, recenter, "centered_rownorm", dual_iters)


@register_k("right_spectral")
def _right_spectral(
  method: str = "newton_schulz", ns_steps: int = 5, ns_coeffs="polar_express", compute_dtype=None
) -> KFunction:
  """K = ½‖X‖_*², ∇K = ‖X‖_*·polar(X). Dual: σ_max (K* = ½σ_max²)."""
  orth = _orth_fn(method, ns_steps, ns_coeffs, compute_dtype)
  return KFunction(
    "right_spectral",
    lambda x: 0.5 * jnp.sum(jnp.square(jnp.sum(_singular_values(x), -1))),
    _matrix_map(lambda x: _nu_polar(x, orth)[0]),
    lambda x: jnp.max(_singular_values(x)),
  )


@register_k("left_spectral")
def _left_spectral(
  center: bool = True,
  method: str = "newton_schulz",
  ns_steps: int = 5,
  ns_coeffs="polar_express",
  compute_dtype=None,
) -> KFunction:
  """K = ½‖ΠX‖_*², ∇K = ‖ΠX‖_*·polar(ΠX) (Π = I without ``center``). Dual: σ_max(ΠX)."""
  orth = _orth_fn(method, ns_steps, ns_coeffs, compute_dtype)
  prep = _center if center else (lambda x: x)
  return KFunction(
    "left_spectral",
    lambda x: 0.5 * jnp.sum(jnp.square(jnp.sum(_singular_values(prep(_f32(_as_matrix(x)))), -1))),
    _matrix_map(lambda x: _nu_polar(prep(x), orth)[0]),
    lambda x: jnp.max(_singular_values(prep(_f32(_as_matrix(x))))),
  )


@register_k("hybrid_rownorm_spectral")
def _hybrid(
  eps: float = 1e-8,
  method: str = "newton_schulz",
  ns_steps: int = 5,
  ns_coeffs="polar_express",
  compute_dtype=None,
) -> KFunction:
  """u = ν·polar(X), X = rownorm(m), ν = ⟨X, polar(X)⟩: NOT ∇ of its ``value``
  (no convex K has this gradient); value = ⟨x, u(x)⟩, dual_norm = σ_max."""
  orth = _orth_fn(method, ns_steps, ns_coeffs, compute_dtype)
  grad = _matrix_map(lambda x: _nu_polar(row_normalize(x, eps), orth)[0])
  return KFunction(
    "hybrid_rownorm_spectral",
    lambda x: jnp.sum(_f32(x) * _f32(grad(x))),
    grad,
    lambda x: jnp.max(_singular_values(x)),
  )
