"""PolarGrad (Lau, Long, Su 2025): the momentum's polar factor, scaled by its nuclear norm.

Lau, Long, Su, "PolarGrad: A Class of Matrix-Gradient Optimizers from a Unifying
Preconditioning Perspective", arXiv:2505.21799 (authors' code: github.com/timlautk/polargrad,
polar_grad.py). Per matrix, with G the gradient and no bias correction:

    M_t = β·M_{t−1} + (1 − β)·G_t
    U_t = polar(M_t) = U·Vᵀ           (M_t = U·Σ·Vᵀ, thin SVD)
    ν_t = ⟨M_t, U_t⟩ = ‖M_t‖_*
    W_t = (1 − η·λ)·W_{t−1} − η·ν_t·U_t

``polar_first=True`` is the authors' other variant, orthogonalizing the gradient
before the momentum: U_t = polar(G_t), ν_t = ⟨G_t, U_t⟩, M_t = β·M_{t−1} + (1 − β)·U_t,
W_t = (1 − η·λ)·W_{t−1} − η·ν_t·M_t.

polar() is exact with ``method="svd"`` (`optimizers.orthogonalization.polar_svd`) or
approximate with ``method="newton_schulz"`` (Muon's iteration; ν = ⟨M, NS(M)⟩ is then
an approximation of ‖M‖_* too, as in the authors' code). The update is homogeneous of
degree 1 in M (Muon's is of degree 0): its size follows the gradient's.

Implicit bias. ν·U = ∇K(M) for K(X) = ½‖X‖_*², registered here as the Lion-K function
"half_nuclear_sq"; PolarGrad (``polar_first=False``) is Lion-K with that K and
b1 = b2 = β. Its conjugate is K*(Y) = ½‖Y‖_op², so the Lion-K objective
f(θ) + (1/λ)·K*(λθ) is f(θ) + (λ/2)·σ_max(θ)²: weight decay is a spectral-norm
penalty, not a ball (Muon's K = ‖·‖_* gives the ball σ_max ≤ 1/λ).

Layout. flax kernels are (fan_in, fan_out), the paper's W is (out, in). The rule is
transpose-equivariant (polar(Xᵀ) = polar(X)ᵀ, ⟨Xᵀ, Uᵀ⟩ = ⟨X, U⟩), so applying it
to the (in, out) leaf gives exactly the transpose of the paper's update: nothing
to transpose. Leading axes of a leaf (L, m, n) are batch axes: one matrix, one ν,
per leading index. Leaves `default_muon_routing` (or ``routing``) does not select go
to AdamW, as in `optimizers.muon.muon`.
"""

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from optax import tree as otu

from optimizers import domains
from optimizers import orthogonalization as ortho
from optimizers import owner_layout as owner_layout_lib
from optimizers.k_functions import KFunction, register_k
from optimizers.zoo_common import ADAM_DOMAINS, ROUTING_DOMAIN, adamw_side, routed

POLARGRAD_METHODS = ("svd", "newton_schulz")


def _check_method(method, ns_steps, ns_coeffs) -> None:
  if method not in POLARGRAD_METHODS:
    raise ValueError(f"Unknown PolarGrad method {method!r}; known: {POLARGRAD_METHODS}.")
  if method == "newton_schulz":
    ortho.ns_coefficients(ns_coeffs, ns_steps)  # Fail on bad options now, not at update.


def _polar_fn(method: str, ns_steps: int, ns_coeffs) -> Callable[[jax.Array], jax.Array]:
  """x (..., m, n) -> its polar factor (same shape and dtype)."""
  if method == "svd":
    return ortho.polar_svd
  return lambda x: ortho.newton_schulz(x, steps=ns_steps, coeffs=ns_coeffs)


def _as_matrix(x):
  """Vectors become 1×n matrices and scalars 1×1 (as the other K functions)."""
  return x.reshape((1,) * (2 - x.ndim) + x.shape) if x.ndim < 2 else x


def _f32(x):
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _inner(x_MxN, y_MxN):
  """⟨X, Y⟩ per matrix, kept as (..., 1, 1) to scale the batch of matrices."""
  return ortho.frobenius_inner(x_MxN, y_MxN)


def polar_scaled(x: jax.Array, method: str = "svd", ns_steps: int = 5, ns_coeffs="quintic"):
  """‖X‖_*·polar(X) per matrix of ``x`` (..., m, n), computed as ⟨X, U⟩·U in f32."""
  polar = _polar_fn(method, ns_steps, ns_coeffs)
  x_MxN = _f32(x)
  u_MxN = polar(x_MxN)
  return _inner(x_MxN, u_MxN) * u_MxN


@register_k("half_nuclear_sq")
def _half_nuclear_sq(method: str = "svd", ns_steps: int = 5, ns_coeffs="quintic") -> KFunction:
  """K = ½‖X‖_*² per matrix (summed over leading axes), ∇K = ‖X‖_*·U·Vᵀ (PolarGrad's
  direction; exact with ``method="svd"``). K*(Y) = ½‖Y‖_op², finite everywhere: no
  ball, the penalty (1/λ)·K*(λθ) = (λ/2)·σ_max(θ)². ``dual_norm`` is therefore
  σ_max (the max over leading axes), the norm of that penalty: K* = ½·dual_norm²."""
  _check_method(method, ns_steps, ns_coeffs)

  def singular_values(x):
    return jnp.linalg.svd(_f32(_as_matrix(x)), compute_uv=False)

  def grad(x):
    return polar_scaled(_as_matrix(x), method, ns_steps, ns_coeffs).reshape(x.shape).astype(x.dtype)

  return KFunction(
    "half_nuclear_sq",
    lambda x: 0.5 * jnp.sum(jnp.square(jnp.sum(singular_values(x), -1))),
    grad,
    lambda x: jnp.max(singular_values(x)),
  )


class ScaleByPolarGradState(NamedTuple):
  count: jax.Array  # shape (), int32: steps taken.
  mu: optax.Updates  # M_t per leaf, (..., m, n) like the params.


def scale_by_polargrad(
  beta: float = 0.95,
  method: str = "svd",
  polar_first: bool = False,
  ns_steps: int = 5,
  ns_coeffs="quintic",
  mu_dtype: Any | None = None,
  owner_layout: bool | None = None,
) -> optax.GradientTransformation:
  """PolarGrad's direction ν·U on every leaf (each of rank ≥ 2); see the module docstring.

  Args:
    beta: momentum decay β (a lerp, no bias correction).
    method: "svd" (exact polar factor) or "newton_schulz".
    polar_first: the variant that orthogonalizes G before the momentum.
    ns_steps, ns_coeffs: the Newton–Schulz iteration (``method="newton_schulz"``);
      under `optax.inject_hyperparams` list ``ns_steps`` in ``static_args``.
    mu_dtype: dtype of M (default float32 whatever the params: the direction is
      computed in f32 and cast back to the update's dtype).
    owner_layout: compute polar() in Muon's owner layout (`polargrad`'s argument).
  """
  _check_method(method, ns_steps, ns_coeffs)
  polar = _polar_fn(method, ns_steps, ns_coeffs)
  mu_dtype = jnp.dtype(jnp.float32 if mu_dtype is None else mu_dtype)

  def init_fn(params):
    for leaf in jax.tree.leaves(params):
      if jnp.ndim(leaf) < 2:
        raise ValueError(
          f"PolarGrad needs matrices (rank >= 2); got a leaf of shape {jnp.shape(leaf)}: "
          "route it to AdamW (the routing argument)."
        )
    return ScaleByPolarGradState(jnp.zeros([], jnp.int32), otu.zeros_like(params, dtype=mu_dtype))

  # Only polar() (a pure function of each matrix, NS or SVD) goes through the owner layout;
  # the momentum and ν = ⟨X, U⟩ stay per leaf, in the leaf's own sharding.
  polar_tree = functools.partial(owner_layout_lib.tree_map, polar, enabled=owner_layout)

  def update_fn(updates, state, params=None):
    del params
    g32, m32 = jax.tree.map(_f32, updates), jax.tree.map(_f32, state.mu)
    if polar_first:
      u = polar_tree(g32)
      m32 = jax.tree.map(lambda m, u: beta * m + (1 - beta) * u, m32, u)
      directions = jax.tree.map(lambda g, u, m: _inner(g, u) * m, g32, u, m32)
    else:
      m32 = jax.tree.map(lambda m, g: beta * m + (1 - beta) * g, m32, g32)
      u = polar_tree(m32)
      directions = jax.tree.map(lambda m, u: _inner(m, u) * u, m32, u)
    directions = jax.tree.map(lambda d, g: d.astype(g.dtype), directions, updates)
    mu = jax.tree.map(lambda m: m.astype(mu_dtype), m32)
    return directions, ScaleByPolarGradState(optax.safe_increment(state.count), mu)

  return optax.GradientTransformation(init_fn, update_fn)


def polargrad(
  learning_rate: optax.ScalarOrSchedule,
  beta: float = 0.95,
  method: str = "svd",
  polar_first: bool = False,
  weight_decay: float = 0.0,
  mask=None,
  ns_steps: int = 5,
  ns_coeffs="quintic",
  mu_dtype: Any | None = None,
  adam_learning_rate: optax.ScalarOrSchedule | None = None,
  adam_b1: float = 0.9,
  adam_b2: float = 0.95,
  adam_eps: float = 1e-8,
  adam_weight_decay: float = 0.0,
  routing: Callable[[Any, Any], bool] | None = None,
  owner_layout: bool | None = None,
) -> optax.GradientTransformation:
  """PolarGrad on the leaves ``routing`` selects, AdamW on the others.

  W ← (1 − η·λ)·W − η·‖M‖_*·polar(M) (module docstring; authors' defaults: η = 0.02,
  β = 0.95, λ = 0).

  Args:
    learning_rate: η of the PolarGrad side (a float or an optax schedule).
    beta, method, polar_first, ns_steps, ns_coeffs, mu_dtype: see `scale_by_polargrad`.
    weight_decay: λ of the PolarGrad side, multiplied by η (a spectral-norm penalty
      (λ/2)·σ_max(W)², not a ball).
    mask: which leaves decay (a pytree of bools or a function of the params, as
      optax), on both sides: a masked-out leaf gets neither λ nor ``adam_weight_decay``.
    adam_learning_rate: AdamW's η (default: ``learning_rate``).
    adam_b1, adam_b2, adam_eps, adam_weight_decay: AdamW's hyperparameters.
    routing: ``routing(path, leaf) -> bool``, True for PolarGrad; None is
      `optimizers.muon.default_muon_routing`. Under `optax.inject_hyperparams` list
      it (and ``ns_steps`` with Newton–Schulz) in ``static_args``.
    owner_layout: polar() (Newton–Schulz or SVD) on same-shape matrices stacked, whole
      matrices per device (`optimizers.owner_layout`: no collective inside the iteration)
      under the ambient mesh (`jax.set_mesh`); None: on when that mesh has an "fsdp" axis
      of size > 1. The same update up to rounding; without a mesh it changes nothing.
  """
  matrix_side = optax.chain(
    scale_by_polargrad(beta, method, polar_first, ns_steps, ns_coeffs, mu_dtype, owner_layout),
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


def _is_ns_coeffs(value) -> bool:
  try:
    ortho.ns_coefficients(value, 1)
  except (ValueError, TypeError):
    return False
  return True


# The values a config may give each hyperparameter (optimizers.domains).
DOMAINS = {
  "beta": domains.DECAY,
  "method": domains.one_of(POLARGRAD_METHODS),
  "polar_first": domains.boolean(),
  "ns_steps": domains.integer(1),
  "ns_coeffs": domains.Domain(_is_ns_coeffs, "a Newton-Schulz preset name or (a, b, c) triples"),
  "mu_dtype": domains.DTYPE,
  **ADAM_DOMAINS,
  "owner_layout": domains.optional(domains.boolean()),
  "routing": ROUTING_DOMAIN,
}

IMPLICIT_BIAS_NOTE = (
  "PolarGrad is Lion-K with K = ½‖·‖_*² (k_functions 'half_nuclear_sq'), whose conjugate is "
  "½‖·‖_op²: decoupled weight decay λ adds the spectral-norm penalty (λ/2)·σ_max(W)² to the "
  "loss instead of confining W to a ball."
)
