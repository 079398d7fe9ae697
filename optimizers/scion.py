"""Scion: a norm-constrained linear minimization oracle per parameter class.

Pethick, Xie, Erdogan, Antonakopoulos, Silveti-Falls, Cevher, "Training Deep
Learning Models with Norm-Constrained LMOs" (arXiv:2502.07529); the rule follows
the authors' code (github.com/LIONS-EPFL/scion, scion.py). Per leaf, with the
averaged gradient d zero at the start (no bias correction) and α the "momentum":

    d ← (1 − α)·d + α·g
    u = ρ·lmo(d)                              (ρ: the class's radius)
    constrained (SCG):    W ← (1 − γ)·W − γ·u
    unconstrained (uSCG): W ← W − γ·u

with γ the learning rate and lmo by the class's norm, for W in the paper's
(out, in) layout:

    spectral  (hidden matrices):  √(out/in)·msign(d)    ball σ_max(W) ≤ ρ·√(out/in)
    sign      (output layer):     sign(d)/in            ball max|W_ij| ≤ ρ/in
    colnorm   (embeddings):       d_j/RMS(d_j) per input column j (RMS over the
                                  out axis, + 1e−8)     ball RMS(W_j) ≤ ρ for every j
    bias_rms  (biases, vectors):  d/RMS(d) (+ 1e−8)     ball RMS(W) ≤ ρ

(``spectral_max``: max(1, √(out/in)), the authors' ``Spectral(max=True)``.) Each
lmo has norm 1 in its class's norm, so SCG's step is a convex combination of W
and a point of the radius-ρ ball: an iterate inside the ball stays inside (with
the exact msign, ``method="svd"``; Newton–Schulz's singular values overshoot 1 by
up to ~13% with Muon's quintic). Scion is Lion-K with b1 = b2 = 1 − α and K =
ρ·(the class norm's dual), and SCG is its Frank–Wolfe form with weight decay 1:
the ball is explicit, of radius ρ, not 1/λ.

Classes (`parameter_roles`, overridable with ``routing``): leaves of rank < 2 are
"bias" (or AdamW with ``vectors="adam"``); a path component naming a head
("head", "*_head", "unembed*", "logits") is "head"; one naming an embedding
("embed", "wte", "wpe") is "embed"; other matrices are "hidden" (stacked (L, m, n)
leaves: one matrix per leading index). A token embedding (wte) with no separate
head in the tree is the tied LM head (GPT-2 here, as the authors' modded-nanogpt
run, where the tied weight is in the Sign group): class "head" (``tied_head``).

Layout: a flax kernel (…, in, out) and a flax embedding table (V, d) used as an
input layer are both Wᵀ (inputs on axis −2), so W = swapaxes(leaf); a table used
as the tied head computes logits = x·tableᵀ, so the table is W (out = V, in = d)
as stored. Everything runs in f32 and is cast back to the leaf's dtype.

The configuration as data (config values are scalars or strings): the radius of
a class is ``radius_<class>`` and its norm ``norm_<class>`` (None = the default:
radius hidden 3, head 10, embed 1, bias 1, as the authors' shallow-nanoGPT
example; norms as above). Python callers may pass the dicts ``radii`` and
``norms`` keyed by class instead; naming one class both ways is an error.
"""

import functools
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optimizers import domains
from optimizers import orthogonalization as ortho
from optimizers import owner_layout as owner_layout_lib
from optimizers.lion_k import K_OPTION_DOMAINS

# Re-exported: the class geometry lives in optimizers.scion_norms.
from optimizers.scion_norms import (  # noqa: F401
  PARAMETER_ROLES,
  SCION_NORMS,
  _t,
  ball_norm,
  is_embedding_table,
  lmo,
  parameter_roles,
  to_paper_layout,
)
from optimizers.zoo_common import ADAM_DOMAINS, adamw_side, check_matrix, state_dtype, unzip

SCION_CLASSES = ("hidden", "head", "embed", "bias")
DEFAULT_NORMS = {"hidden": "spectral", "head": "sign", "embed": "colnorm", "bias": "bias_rms"}
DEFAULT_RADII = {"hidden": 3.0, "head": 10.0, "embed": 1.0, "bias": 1.0}
SCION_VECTORS = ("bias", "adam")

IMPLICIT_BIAS_NOTE = (
  "An explicit ball per class, of radius ρ (not 1/λ): constrained Scion (Frank–Wolfe, γ ≤ 1) "
  "keeps an iterate inside once it is, √(in/out)·σ_max(W) ≤ ρ_hidden, in·max|W_ij| ≤ ρ_head, "
  "max over input columns RMS ≤ ρ_embed, RMS ≤ ρ_bias (exact with method='svd'); "
  "unconstrained Scion has no ball; AdamW leaves: ℓ∞ ball with the section's weight_decay."
)


# Path components naming a head or an embedding (as optimizers.muon's routing);
# the head is tested first, so "unembed" is a head.
class ScaleByScionState(NamedTuple):
  count: jax.Array  # shape (), int32: steps taken.
  mu: optax.Updates  # d, the averaged gradient, like the params.


def scale_by_scion(
  norm: str,
  radius: float,
  cls: str,
  momentum: float = 0.1,
  constrained: bool = True,
  method: str = "newton_schulz",
  ns_steps: int = 5,
  ns_coeffs="quintic",
  compute_dtype: Any | None = None,
  spectral_max: bool = False,
  eps: float = 1e-8,
  mu_dtype: Any | None = None,
  owner_layout: bool | None = None,
) -> optax.GradientTransformation:
  """Scion's direction for one class: ρ·lmo(d) + W when constrained (so that
  −γ times it is SCG's step), ρ·lmo(d) otherwise; the learning rate comes after.

  ``cls`` only decides the layout (a table in "head" is not transposed). ``owner_layout``
  (`scion`'s argument) applies to the "spectral" norm's msign.
  """
  if norm not in SCION_NORMS:
    raise ValueError(f"Unknown Scion norm {norm!r}; known: {SCION_NORMS}.")
  if method == "newton_schulz":
    ortho.ns_coefficients(ns_coeffs, ns_steps)  # Fail on bad options now, not at update.
    orth = lambda x: ortho.newton_schulz(
      x, steps=ns_steps, coeffs=ns_coeffs, compute_dtype=compute_dtype
    )
  elif method == "svd":
    orth = ortho.polar_svd
  else:
    raise ValueError(
      f"Unknown orthogonalization method {method!r}; known: {ortho.ORTHOGONALIZE_METHODS}."
    )
  dtype = state_dtype(mu_dtype)

  def init_fn(params):
    if norm != "bias_rms":
      jax.tree.map(lambda p: check_matrix(p, f"Scion's {norm} lmo"), params)
    return ScaleByScionState(
      jnp.zeros([], jnp.int32), jax.tree.map(lambda p: jnp.zeros(p.shape, dtype), params)
    )

  def paper_layout(path, g, d):
    d32 = (1.0 - momentum) * d.astype(jnp.float32) + momentum * g.astype(jnp.float32)
    return d32, (_t(d32) if to_paper_layout(path, g, cls) else d32)

  # The spectral lmo's msign (a pure function of each matrix) goes through the owner layout
  # ahead of the lmo, which then gets it done (orth = identity: the other norms do not use
  # orth); the scale and the other norms (elementwise, per row or column) stay per leaf.
  orth_tree = functools.partial(owner_layout_lib.tree_map, orth, enabled=owner_layout)

  def leaf_update(path, g, x, w):
    u = radius * lmo(x, norm, lambda done: done, spectral_max, eps)
    u = _t(u) if to_paper_layout(path, g, cls) else u
    if constrained:
      u = u + w.astype(jnp.float32)
    return u.astype(g.dtype)

  def update_fn(updates, state, params=None):
    if constrained and params is None:
      raise ValueError("Constrained Scion needs the params: call update(grads, state, params).")
    params = updates if params is None else params  # Unused when unconstrained.
    out = jax.tree_util.tree_map_with_path(paper_layout, updates, state.mu)
    d32, x = unzip(updates, out, 2)
    x = orth_tree(x) if norm == "spectral" else x
    direction = jax.tree_util.tree_map_with_path(leaf_update, updates, x, params)
    mu = jax.tree.map(lambda d: d.astype(dtype), d32)
    return direction, ScaleByScionState(optax.safe_increment(state.count), mu)

  return optax.GradientTransformation(init_fn, update_fn)


def resolve_classes(
  radii: Mapping[str, float] | None = None,
  norms: Mapping[str, str] | None = None,
  **flat,
) -> tuple[dict, dict]:
  """(radius, norm) per class from the defaults, the dicts and the flat
  ``radius_<class>`` / ``norm_<class>`` keywords (None = not given)."""
  out = {"radius": dict(DEFAULT_RADII), "norm": dict(DEFAULT_NORMS)}
  for kind, given in (("radius", radii), ("norm", norms)):
    unknown = sorted(set(given or {}) - set(SCION_CLASSES))
    if unknown:
      raise ValueError(f"Unknown Scion class(es) {unknown} in the {kind}s; known: {SCION_CLASSES}.")
    for cls in SCION_CLASSES:
      value = flat.pop(f"{kind}_{cls}", None)
      if value is not None and given and cls in given:
        raise ValueError(f"Scion's {kind} of {cls!r} is given twice ({kind}_{cls} and the dict).")
      if given and cls in given:
        value = given[cls]
      if value is not None:
        out[kind][cls] = value
  if flat:
    raise ValueError(f"Unknown Scion keyword(s) {sorted(flat)}.")
  for cls, value in out["radius"].items():
    if domains.is_number(value) and not value > 0:
      raise ValueError(f"Scion's radius of {cls!r} must be > 0, got {value!r}.")
  for cls, value in out["norm"].items():
    if value not in SCION_NORMS:
      raise ValueError(f"Unknown Scion norm {value!r} for {cls!r}; known: {SCION_NORMS}.")
  return out["radius"], out["norm"]


def scion_labels(
  params,
  vectors: str = "bias",
  tied_head: bool | None = None,
  routing: Callable[[Any, Any], str] | None = None,
):
  """The tree of Scion classes ("hidden", "head", "embed", "bias") or "adam" per
  leaf: ``routing(path, leaf)`` when given, else `parameter_roles` with the
  vectors in "bias" or "adam" (``vectors``)."""
  if routing is not None:
    return jax.tree_util.tree_map_with_path(routing, params)
  vector_class = "bias" if vectors == "bias" else "adam"
  return jax.tree.map(
    lambda r: vector_class if r == "vector" else r, parameter_roles(params, tied_head)
  )


def scion(
  learning_rate: optax.ScalarOrSchedule,
  momentum: float = 0.1,
  constrained: bool = True,
  radii: Mapping[str, float] | None = None,
  norms: Mapping[str, str] | None = None,
  radius_hidden: float | None = None,
  radius_head: float | None = None,
  radius_embed: float | None = None,
  radius_bias: float | None = None,
  norm_hidden: str | None = None,
  norm_head: str | None = None,
  norm_embed: str | None = None,
  norm_bias: str | None = None,
  method: str = "newton_schulz",
  ns_steps: int = 5,
  ns_coeffs="quintic",
  compute_dtype: Any | None = None,
  spectral_max: bool = False,
  eps: float = 1e-8,
  vectors: str = "bias",
  tied_head: bool | None = None,
  weight_decay: float = 0.0,
  mask=None,
  adam_learning_rate: optax.ScalarOrSchedule | None = None,
  adam_b1: float = 0.9,
  adam_b2: float = 0.95,
  adam_eps: float = 1e-8,
  mu_dtype: Any | None = None,
  routing: Callable[[Any, Any], str] | None = None,
  owner_layout: bool | None = None,
) -> optax.GradientTransformation:
  """Scion (module docstring) on its classes, AdamW on the leaves labelled "adam".

  Args:
    learning_rate: γ (a float or an optax schedule); SCG needs γ ≤ 1.
    momentum: α of d ← (1 − α)·d + α·g (1: no averaging; the authors' 0.1).
    constrained: SCG (True) or uSCG (False).
    radii, norms: per-class dicts (Python callers); see the flat keywords.
    radius_hidden, radius_head, radius_embed, radius_bias: ρ per class (None:
      the default 3, 10, 1, 1).
    norm_hidden, norm_head, norm_embed, norm_bias: the lmo per class, one of
      SCION_NORMS (None: spectral, sign, colnorm, bias_rms).
    method, ns_steps, ns_coeffs, compute_dtype: how msign is computed
      ("newton_schulz", Muon's quintic by default, or "svd": exact).
    spectral_max: the spectral scale max(1, √(out/in)) instead of √(out/in).
    eps: added to the RMS in colnorm and bias_rms.
    vectors: "bias" (Scion's BiasRMS class) or "adam" for the leaves of rank < 2.
    tied_head: whether the token embedding is the LM head (None: when the tree
      has no head leaf).
    weight_decay: λ of the AdamW leaves only (multiplied by η); Scion's own
      leaves have SCG's contraction instead.
    mask: which AdamW leaves decay (as optax).
    adam_learning_rate, adam_b1, adam_b2, adam_eps: AdamW's.
    mu_dtype: dtype of the averaged gradients and of AdamW's first moment
      (Scion's default: float32).
    routing: ``routing(path, leaf) -> str``, a class of SCION_CLASSES or "adam"
      per leaf (None: `scion_labels`). Under `optax.inject_hyperparams` list
      ``ns_steps``, ``routing`` and ``mask`` (a function) in ``static_args``.
    owner_layout: the spectral lmo's msign on same-shape matrices stacked, whole matrices
      per device (`optimizers.owner_layout`: no collective inside the iteration) under the
      ambient mesh (`jax.set_mesh`); None: on when that mesh has an "fsdp" axis of size > 1.
      The same update up to rounding; without a mesh it changes nothing.
  """
  radius, norm = resolve_classes(
    radii,
    norms,
    radius_hidden=radius_hidden,
    radius_head=radius_head,
    radius_embed=radius_embed,
    radius_bias=radius_bias,
    norm_hidden=norm_hidden,
    norm_head=norm_head,
    norm_embed=norm_embed,
    norm_bias=norm_bias,
  )
  if vectors not in SCION_VECTORS:
    raise ValueError(f"Unknown Scion vectors {vectors!r}; known: {SCION_VECTORS}.")
  sides = {
    cls: optax.chain(
      scale_by_scion(
        norm[cls],
        radius[cls],
        cls,
        momentum,
        constrained,
        method,
        ns_steps,
        ns_coeffs,
        compute_dtype,
        spectral_max,
        eps,
        mu_dtype,
        owner_layout,
      ),
      optax.scale_by_learning_rate(learning_rate),
    )
    for cls in SCION_CLASSES
  }
  adam_lr = learning_rate if adam_learning_rate is None else adam_learning_rate
  sides["adam"] = adamw_side(adam_lr, adam_b1, adam_b2, adam_eps, weight_decay, mask, mu_dtype)
  return optax.partition(sides, lambda params: scion_labels(params, vectors, tied_head, routing))


def scion_ball_norms(params, **hyperparameters):
  """Per leaf ball_norm(W) of its class (NaN for AdamW leaves), for the section's
  hyperparameters (the keywords of `scion`; the others are ignored): an SCG
  iterate is inside its ball when this is ≤ the class's radius."""
  h = dict(hyperparameters)
  flat = {
    k: h.get(k) for k in (f"{kind}_{c}" for kind in ("radius", "norm") for c in SCION_CLASSES)
  }
  _, norm = resolve_classes(h.get("radii"), h.get("norms"), **flat)
  labels = scion_labels(params, h.get("vectors", "bias"), h.get("tied_head"), h.get("routing"))

  def leaf(path, cls, p):
    if cls == "adam":
      return jnp.float32(jnp.nan)
    x = _t(p) if to_paper_layout(path, p, cls) else p
    return ball_norm(x, norm[cls], h.get("spectral_max", False))

  return jax.tree_util.tree_map_with_path(leaf, labels, params)


DOMAINS: dict[str, domains.Domain] = {
  "momentum": domains.interval(0, 1, low_closed=False, high_closed=True),
  "constrained": domains.boolean(),
  "radii": domains.Domain(
    lambda v: (
      v is None
      or (
        isinstance(v, Mapping)
        and set(v) <= set(SCION_CLASSES)
        and all(map(domains.is_number, v.values()))
      )
    ),
    f"None or a dict class -> radius > 0 over {SCION_CLASSES}",
  ),
  "norms": domains.Domain(
    lambda v: (
      v is None
      or (
        isinstance(v, Mapping)
        and set(v) <= set(SCION_CLASSES)
        and set(v.values()) <= set(SCION_NORMS)
      )
    ),
    f"None or a dict class -> norm, classes {SCION_CLASSES}, norms {SCION_NORMS}",
  ),
  **{f"radius_{c}": domains.optional(domains.positive()) for c in SCION_CLASSES},
  **{f"norm_{c}": domains.optional(domains.one_of(SCION_NORMS)) for c in SCION_CLASSES},
  "method": K_OPTION_DOMAINS["method"],
  "ns_steps": domains.integer(1),
  "ns_coeffs": K_OPTION_DOMAINS["ns_coeffs"],
  "compute_dtype": domains.DTYPE,
  "spectral_max": domains.boolean(),
  "eps": domains.positive(),
  "vectors": domains.one_of(SCION_VECTORS),
  "tied_head": domains.optional(domains.boolean()),
  **{k: v for k, v in ADAM_DOMAINS.items() if k != "adam_weight_decay"},
  "mu_dtype": domains.DTYPE,
  "owner_layout": domains.optional(domains.boolean()),
  "routing": domains.Domain(
    lambda v: v is None or callable(v), "None or a function (path, leaf) -> a Scion class or 'adam'"
  ),
}
