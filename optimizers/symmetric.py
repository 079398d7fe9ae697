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
from optimizers import owner_layout as owner_layout_lib
from optimizers.k_functions import KFunction, get_k
from optimizers.lion_k import K_OPTION_DOMAINS, scale_by_lion_k
from optimizers.muon import MUON_SCALES, scale_by_shape
from optimizers.scion_norms import is_embedding_table, parameter_roles

# The row maps and K functions (registered on import) live in optimizers.symmetric_k.
from optimizers.symmetric_k import (  # noqa: F401
  _row_k,
  chebyshev_radius,
  row_normalize,
)
from optimizers.zoo_common import ADAM_DOMAINS, adamw_side, state_dtype

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
  kfn: KFunction, beta: float = 0.95, mu_dtype: Any | None = None, owner_layout: bool | None = False
) -> optax.GradientTransformation:
  """m ← β·m + (1 − β)·g, u = kfn.grad(m) on the rows-first view of each leaf
  (`rows_first`); the decay and learning rate come after. ``owner_layout``: kfn.grad on
  same-shape matrices stacked, whole matrices per device (`optimizers.owner_layout`; None: on
  under FSDP), for the spectral rules, whose polar() would otherwise have GSPMD partition
  every Newton–Schulz matmul; False (default) for the row rules, which are local to a row."""
  dtype = state_dtype(mu_dtype)

  def init_fn(params):
    return ScaleBySymmetricState(
      jnp.zeros([], jnp.int32), jax.tree.map(lambda p: jnp.zeros(p.shape, dtype), params)
    )

  def flip(path, x):
    return jnp.swapaxes(x, -1, -2) if rows_first(path, x) else x

  def update_fn(updates, state, params=None):
    del params
    mu = jax.tree.map(
      lambda g, m: beta * m.astype(jnp.float32) + (1.0 - beta) * g.astype(jnp.float32),
      updates,
      state.mu,
    )
    rows = jax.tree_util.tree_map_with_path(flip, mu)
    u = owner_layout_lib.tree_map(kfn.grad, rows, enabled=owner_layout)
    direction = jax.tree_util.tree_map_with_path(flip, u)  # Back to the leaf's layout.
    return (
      jax.tree.map(lambda d, g: d.astype(g.dtype), direction, updates),
      ScaleBySymmetricState(
        optax.safe_increment(state.count), jax.tree.map(lambda m: m.astype(dtype), mu)
      ),
    )

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
  owner_layout: bool | None = None,
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
    owner_layout: polar() of the spectral, hybrid and Muon classes on same-shape matrices
      stacked, whole matrices per device (`optimizers.owner_layout`: no collective inside
      Newton–Schulz) under the ambient mesh; None: on under FSDP. The row rules never use it.
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
          tree_map=functools.partial(owner_layout_lib.tree_map, enabled=owner_layout),
          **(ns if method == "newton_schulz" else {}),
        ),
        scale_by_shape(scale),
      )
    elif rules[cls] == "adamw":
      return optax.identity()  # No leaf has this label (symmetric_labels gives "adam").
    else:
      kfn = _rule_k(rules[cls], eps, method, ns_steps, ns_coeffs, compute_dtype)
      spectral = rules[cls] in ("right_spectral", "left_spectral", "hybrid")
      direction = scale_by_symmetric(kfn, beta, mu_dtype, owner_layout if spectral else False)
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
  "owner_layout": domains.optional(domains.boolean()),
}
