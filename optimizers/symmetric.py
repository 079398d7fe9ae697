"""Symmetry-compatible updates: one geometry per parameter class (Lau & Su).

Lau, Su, "Symmetry-compatible optimizers" (arXiv:2605.18106); the rules follow
the authors' code (github.com/timlautk/equivariant_optimizers, optim/rownorm.py,
rightpolargrad.py, leftpolargrad.py, hybrid.py, routing.py). Every class keeps the
EMA momentum m ← β·m + (1 − β)·g (no bias correction) and steps
W ← W − η·(u(m) + λ·W) (decoupled decay), with u by class, for m (rows, cols):

    rownorm            u_i = m_i/(‖m_i‖₂ + ε)                 (each row)
    centered_rownorm   c = Π·m (Π: subtract the mean over rows), u = Π·rownorm(c)
                       (``recenter=False``: the code's u = rownorm(c))
    right_spectral     u = ν·m·(mᵀm)^{−1/2} = ν·polar(m),  ν = ⟨m, polar(m)⟩ = ‖m‖_*
    left_spectral      u = ν·(c·cᵀ)^{−1/2}·c = ν·polar(c), c = Π·m (routers; ``center``)
    hybrid             X = rownorm(m), u = ν·polar(X), ν = ⟨X, polar(X)⟩

polar() by Newton–Schulz (`optimizers.orthogonalization`, Polar Express
coefficients as the authors' backend) or the exact SVD (``method="svd"``). Our
iteration always runs on the short side's Gram matrix, so "right" and "left"
compute the same polar factor; they differ only in left's centering (the names
say which Gram the authors invert: d×d for a [V, d] table, E×E for an [E, d] router).

As Lion-K functions (registered here with `optimizers.register_k`, Lion-K with
b1 = b2 = β is exactly the EMA rule above):

- "centered_rownorm": K(x) = Σ_i h(‖(Πx)_i‖), h(t) = t − ε·log(1 + t/ε) (the
  ℓ2,1 norm of Πx for ε = 0, smoothed so that ∇K is exactly Π·rownorm_ε(Πx)).
  K is a seminorm blind to shifts x + 1cᵀ, so K* is finite only on matrices with
  zero row mean, where its unit ball is min_c max_i ‖x_i − c‖ ≤ 1: the smallest
  ball around the rows (Chebyshev radius, `chebyshev_radius`, translation
  invariant) has radius ≤ 1. The shift component of W is bounded by no ball: it
  only decays. ``recenter=False`` (the code) drops the outer Π: u then has a
  component along the shifts and is the gradient of no function (its Jacobian
  rownorm′·Π is not symmetric).
- "right_spectral": K(x) = ½‖x‖_*², ∇K = ‖x‖_*·polar(x) (exact with
  method="svd"); K* = ½σ_max²: decoupled decay is the penalty (λ/2)·σ_max(W)², not
  a ball (as PolarGrad: it is the same K as polargrad's "half_nuclear_sq").
- "left_spectral": K(x) = ½‖Πx‖_*² (center=True), ∇K = ‖Πx‖_*·polar(Πx) (polar(Πx)
  is already centered, so this is the code's update); K* = ½σ_max² on zero-row-
  mean matrices, +∞ elsewhere; dual_norm = σ_max(Πx).
- "hybrid_rownorm_spectral": not the gradient of a convex K (it is ∇(½‖·‖_*²)
  composed with the row normalization). Registered so that Lion-K can run it:
  ``grad`` is the update, ``value(x) = ⟨x, grad(x)⟩`` (≥ 0: a descent direction;
  the Euler identity a 1-homogeneous K would satisfy, *not* a potential of
  grad), ``dual_norm`` = σ_max: σ_max(u) = ν = ‖X‖_* ≤ √(rank·rows), so decay λ
  keeps σ_max(W) ≤ sup_t ν_t/λ, a ball of data-dependent radius.

`symmetric_stack` routes a transformer (GPT-2's tree, `models.gpt2`) as the
authors' defaults: token and position embeddings right_spectral, the LM head
hybrid (the tied wte is the head, as the code's routing puts a tied weight in
the lm_head group), attention and MLP matrices Muon (`optimizers.muon`'s rule:
Lion-K nuclear with Nesterov and the shape scale), every leaf of rank < 2 AdamW
(0.9, 0.95). Classes via `optimizers.scion.parameter_roles`, overridable.

Layout: the row rules act on the vocabulary/output axis as rows, i.e. on the
torch storage: an embedding table (V, d) as stored, a flax kernel (…, in, out)
transposed to (…, out, in) (the untied head (d, V) becomes (V, d)). The spectral
rules are transpose-equivariant. Leading axes are stacked matrices (one u per
index); everything runs in f32 and is cast back to the leaf's dtype.
"""

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optimizers import domains
from optimizers import orthogonalization as ortho
from optimizers.k_functions import KFunction, get_k, register_k
from optimizers.lion_k import K_OPTION_DOMAINS, scale_by_lion_k
from optimizers.muon import MUON_SCALES, scale_by_shape
from optimizers.scion import is_embedding_table, parameter_roles
from optimizers.zoo_common import ADAM_DOMAINS, adamw_side, state_dtype, unzip

SYMMETRIC_RULES = (
  "right_spectral",
  "left_spectral",
  "rownorm",
  "centered_rownorm",
  "hybrid",
  "muon",
  "adamw",
)
SYMMETRIC_CLASSES = ("embed", "head", "matrices")

IMPLICIT_BIAS_NOTE = (
  "Per class its K and dual norm: right/left_spectral K = ½‖·‖_*² (decay λ penalizes "
  "(λ/2)·σ_max(W)², no ball); rownorm K = ℓ2,1 (ball max_i ‖W_i‖ ≤ 1/λ); centered_rownorm "
  "the Chebyshev radius of the rows ≤ 1/λ (shift part only decays); hybrid is no ∇K (σ_max(W) ≤ "
  "ν/λ, ν = ‖rownorm(m)‖_* data-dependent); Muon matrices σ_max ≤ s/λ; AdamW leaves ℓ∞ ≤ 1/λ_adam."
)


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
  return jnp.sum(x * y, axis=(-2, -1), keepdims=True)


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


def _rule_k(rule: str, eps: float, method, ns_steps, ns_coeffs, compute_dtype) -> KFunction:
  spectral = dict(
    method=method, ns_steps=ns_steps, ns_coeffs=ns_coeffs, compute_dtype=compute_dtype
  )
  if rule == "rownorm":
    return _row_k(eps, False, False, "rownorm_eps")
  if rule == "centered_rownorm":
    return get_k("centered_rownorm", eps=eps)
  if rule == "hybrid":
    return get_k("hybrid_rownorm_spectral", eps=eps, **spectral)
  return get_k(rule, **spectral)  # right_spectral, left_spectral


def rows_first(path, leaf) -> bool:
  """Whether a leaf is transposed so that its rows are the vocabulary/output axis:
  every matrix but an embedding table (module docstring)."""
  return jnp.ndim(leaf) >= 2 and not is_embedding_table(path)


class ScaleBySymmetricState(NamedTuple):
  count: jax.Array  # shape (), int32: steps taken.
  mu: optax.Updates  # m, the EMA momentum, like the params.


def scale_by_symmetric(
  kfn: KFunction, beta: float = 0.95, mu_dtype: Any | None = None
) -> optax.GradientTransformation:
  """m ← β·m + (1 − β)·g, u = kfn.grad(m) on the rows-first view of each leaf
  (`rows_first`); the decay and learning rate come after."""
  dtype = state_dtype(mu_dtype)

  def init_fn(params):
    return ScaleBySymmetricState(
      jnp.zeros([], jnp.int32), jax.tree.map(lambda p: jnp.zeros(p.shape, dtype), params)
    )

  def leaf_update(path, g, m):
    m32 = beta * m.astype(jnp.float32) + (1.0 - beta) * g.astype(jnp.float32)
    if rows_first(path, g):
      u = jnp.swapaxes(kfn.grad(jnp.swapaxes(m32, -1, -2)), -1, -2)
    else:
      u = kfn.grad(m32)
    return u.astype(g.dtype), m32.astype(dtype)

  def update_fn(updates, state, params=None):
    del params
    out = jax.tree_util.tree_map_with_path(leaf_update, updates, state.mu)
    direction, mu = unzip(updates, out, 2)
    return direction, ScaleBySymmetricState(optax.safe_increment(state.count), mu)

  return optax.GradientTransformation(init_fn, update_fn)


def symmetric_labels(
  params,
  embed: str = "right_spectral",
  head: str = "hybrid",
  matrices: str = "muon",
  tied_head: bool | None = None,
  routing: Callable[[Any, Any], str] | None = None,
):
  """The tree of classes "embed" / "head" / "matrices" / "adam": ``routing(path,
  leaf)`` when given, else `optimizers.scion.parameter_roles` (embed, head,
  hidden -> matrices, vectors -> adam); a class whose rule is "adamw" is "adam"."""
  if routing is not None:
    classes = jax.tree_util.tree_map_with_path(routing, params)
  else:
    to_class = {"embed": "embed", "head": "head", "hidden": "matrices", "vector": "adam"}
    classes = jax.tree.map(to_class.get, parameter_roles(params, tied_head))
  rules = {"embed": embed, "head": head, "matrices": matrices, "adam": "adamw"}
  return jax.tree.map(lambda c: "adam" if rules[c] == "adamw" else c, classes)


def symmetric_stack(
  learning_rate: optax.ScalarOrSchedule,
  embed: str = "right_spectral",
  head: str = "hybrid",
  matrices: str = "muon",
  beta: float = 0.95,
  nesterov: bool = True,
  eps: float = 1e-8,
  method: str = "newton_schulz",
  ns_steps: int = 5,
  ns_coeffs="polar_express",
  compute_dtype: Any | None = None,
  scale: str = "shape",
  tied_head: bool | None = None,
  embed_learning_rate: optax.ScalarOrSchedule | None = None,
  head_learning_rate: optax.ScalarOrSchedule | None = None,
  weight_decay: float = 0.0,
  mask=None,
  adam_learning_rate: optax.ScalarOrSchedule | None = None,
  adam_b1: float = 0.9,
  adam_b2: float = 0.95,
  adam_eps: float = 1e-8,
  adam_weight_decay: float = 0.0,
  mu_dtype: Any | None = None,
  routing: Callable[[Any, Any], str] | None = None,
) -> optax.GradientTransformation:
  """The authors' symmetry-compatible stack (module docstring) as one optax transform.

  Args:
    learning_rate: η of the "matrices" class (a float or an optax schedule).
    embed, head, matrices: the rule of each class, one of SYMMETRIC_RULES
      (defaults: the authors' right_spectral, hybrid, muon).
    beta: the EMA momentum β of every class but AdamW (Muon's β too).
    nesterov: Muon's Nesterov momentum (for the classes whose rule is "muon").
    eps: ε of the row normalizations.
    method, ns_steps, ns_coeffs, compute_dtype: how polar() is computed, for the
      spectral rules and Muon alike (default Polar Express, the authors' backend;
      "quintic" is Muon's own).
    scale: Muon's per-matrix scale (`optimizers.muon.MUON_SCALES`).
    tied_head: whether the token embedding is the LM head (None: when the tree
      has no head leaf, as GPT-2's tied wte).
    embed_learning_rate, head_learning_rate: η of those classes (default:
      ``learning_rate``; the authors' 1e−3 for both, 8e−4 for the matrices).
    weight_decay: λ of the embed, head and matrices classes (multiplied by η).
    mask: which leaves decay (as optax), on every class.
    adam_learning_rate, adam_b1, adam_b2, adam_eps, adam_weight_decay: AdamW's.
    mu_dtype: dtype of the momenta (default float32; Muon's: the params').
    routing: ``routing(path, leaf) -> "embed" | "head" | "matrices" | "adam"``
      (None: `symmetric_labels`). Under `optax.inject_hyperparams` list
      ``ns_steps``, ``routing`` and ``mask`` (a function) in ``static_args``.
  """
  rules = {"embed": embed, "head": head, "matrices": matrices}
  for cls, rule in rules.items():
    if rule not in SYMMETRIC_RULES:
      raise ValueError(f"Unknown rule {rule!r} for the {cls} class; known: {SYMMETRIC_RULES}.")
  if scale not in MUON_SCALES:
    raise ValueError(f"Unknown Muon scale {scale!r}; known: {MUON_SCALES}.")
  lrs = {
    "embed": learning_rate if embed_learning_rate is None else embed_learning_rate,
    "head": learning_rate if head_learning_rate is None else head_learning_rate,
    "matrices": learning_rate,
  }

  def side(cls):
    if rules[cls] == "muon":
      ns = dict(ns_steps=ns_steps, ns_coeffs=ns_coeffs, compute_dtype=compute_dtype)
      direction = optax.chain(
        scale_by_lion_k(
          "nuclear",
          b1=beta * beta if nesterov else beta,
          b2=beta,
          mu_dtype=mu_dtype,
          method=method,
          **(ns if method == "newton_schulz" else {}),
        ),
        scale_by_shape(scale),
      )
    elif rules[cls] == "adamw":
      return optax.identity()  # No leaf has this label (symmetric_labels gives "adam").
    else:
      kfn = _rule_k(rules[cls], eps, method, ns_steps, ns_coeffs, compute_dtype)
      direction = scale_by_symmetric(kfn, beta, mu_dtype)
    return optax.chain(
      direction,
      optax.add_decayed_weights(weight_decay, mask),
      optax.scale_by_learning_rate(lrs[cls]),
    )

  sides = {cls: side(cls) for cls in SYMMETRIC_CLASSES}
  adam_lr = learning_rate if adam_learning_rate is None else adam_learning_rate
  sides["adam"] = adamw_side(adam_lr, adam_b1, adam_b2, adam_eps, adam_weight_decay, mask, mu_dtype)
  return optax.partition(
    sides, lambda params: symmetric_labels(params, embed, head, matrices, tied_head, routing)
  )


DOMAINS: dict[str, domains.Domain] = {
  "embed": domains.one_of(SYMMETRIC_RULES),
  "head": domains.one_of(SYMMETRIC_RULES),
  "matrices": domains.one_of(SYMMETRIC_RULES),
  "beta": domains.DECAY,
  "nesterov": domains.boolean(),
  "eps": domains.nonnegative(),
  "method": K_OPTION_DOMAINS["method"],
  "ns_steps": domains.integer(1),
  "ns_coeffs": K_OPTION_DOMAINS["ns_coeffs"],
  "compute_dtype": domains.DTYPE,
  "scale": domains.one_of(MUON_SCALES),
  "tied_head": domains.optional(domains.boolean()),
  "embed_learning_rate": domains.optional(domains.positive()),
  "head_learning_rate": domains.optional(domains.positive()),
  **ADAM_DOMAINS,
  "mu_dtype": domains.DTYPE,
  "routing": domains.Domain(
    lambda v: v is None or callable(v),
    "None or a function (path, leaf) -> 'embed' | 'head' | 'matrices' | 'adam'",
  ),
}
