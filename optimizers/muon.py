"""Muon (Jordan et al. 2024) as Lion-K with K = nuclear, and AdamW on the rest.

Muon with Nesterov momentum (Jordan, "Muon: An optimizer for hidden layers in
neural networks", https://kellerjordan.github.io/posts/muon/, 2024):

    m_t = β·m_{t−1} + (1 − β)·g_t
    O_t = orth(β·m_t + (1 − β)·g_t)        (Nesterov; orth(m_t) without it)
    θ_t = θ_{t−1} − η·(s·O_t + λ·θ_{t−1})

Expanding, β·m_t + (1 − β)·g_t = β²·m_{t−1} + (1 − β²)·g_t, so Muon is Lion-K
with K = nuclear (∇K = orth = U·Vᵀ), b1 = β², b2 = β (b1 = b2 = β without
Nesterov), and it runs on that code path. orth is scale invariant, so the
momentum's normalization (lerp here, sum in the reference code) does not
matter. Unlike `optax.contrib.muon`, no bias correction is applied (as in the
reference code): it would change the mix of m and g in the first steps.

s is the per-matrix scale (``scale``): "shape" = √max(1, fan_out/fan_in)
(Jordan's), "rms_match" = 0.2·√max(fan_in, fan_out) (Liu et al., "Muon is
Scalable for LLM Training", arXiv:2502.16982: the update RMS of AdamW, so its
learning rate and weight decay transfer), "none" = 1. A leaf (..., fan_in,
fan_out) follows the flax kernel layout (inputs on axis −2).

Only hidden matrices go to Muon; the rule `default_muon_routing` (overridable
with ``routing``) sends embeddings, heads and every leaf of rank < 2 to AdamW.
"""

import functools
import math
import re
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from optimizers import domains
from optimizers import owner_layout as owner_layout_lib
from optimizers.lion_k import K_OPTION_DOMAINS, scale_by_lion_k

MUON_SCALES = ("shape", "rms_match", "none")

# A path component that names an embedding or an output head.
_NOT_HIDDEN = re.compile(r"embed|^wte$|^wpe$|(^|_)head$|^unembed|^logits$")


def path_names(path) -> tuple[str, ...]:
  """('params', 'h_0', 'attn', 'kernel')-style names of a jax key path: dict
  keys, list and tuple indices ('0'), NamedTuple and dataclass fields."""
  return tuple(jax.tree_util.keystr((key,), simple=True) for key in path)


def default_muon_routing(path, leaf) -> bool:
  """True when a leaf goes to Muon: rank ≥ 2 and no path component names an
  embedding or a head (matches "embed", "wte", "wpe", "head", "*_head",
  "unembed*", "logits"). So token/position embeddings, the LM head (tied to
  wte or not), biases, LayerNorm scales and other vectors go to AdamW, and
  stacked matrices (L, m, n) go to Muon, one matrix per leading index."""
  if jnp.ndim(leaf) < 2:
    return False
  return not any(_NOT_HIDDEN.search(name.lower()) for name in path_names(path))


def muon_labels(params, routing: Callable[[Any, Any], bool] = default_muon_routing):
  """The pytree of "muon" / "adam" labels that ``routing(path, leaf)`` gives."""
  return jax.tree_util.tree_map_with_path(
    lambda path, leaf: "muon" if routing(path, leaf) else "adam", params
  )


def shape_scale(shape, scale: str = "shape") -> float:
  """The factor s of a (..., fan_in, fan_out) matrix for the named ``scale``."""
  if scale not in MUON_SCALES:
    raise ValueError(f"Unknown Muon scale {scale!r}; known: {MUON_SCALES}.")
  fan_in, fan_out = (shape[-2], shape[-1]) if len(shape) >= 2 else (1, math.prod(shape))
  if scale == "shape":
    return math.sqrt(max(1.0, fan_out / fan_in))
  if scale == "rms_match":
    return 0.2 * math.sqrt(max(fan_in, fan_out))
  return 1.0


def scale_by_shape(scale: str = "shape") -> optax.GradientTransformation:
  """Multiplies each leaf's update by `shape_scale` of its shape."""
  shape_scale((1, 1), scale)  # Fail on an unknown name now, not at update.

  def update_fn(updates, state, params=None):
    del params
    return jax.tree.map(lambda u: u * shape_scale(u.shape, scale), updates), state

  return optax.GradientTransformation(optax.init_empty_state, update_fn)


def _masked_decayed_weights(weight_decay: float, mask) -> optax.GradientTransformation:
  """optax.add_decayed_weights with its state, decaying only where ``mask``
  (a pytree of bools or a function of the params; None = everywhere) is True."""
  inner = optax.add_decayed_weights(weight_decay)
  if mask is None:
    return inner

  def update(updates, state, params):
    keep = mask(params) if callable(mask) else mask
    decayed, state = inner.update(updates, state, params)
    # keep first: under optax.partition a pytree mask has a bool where the
    # updates hold a MaskedNode (the other side's leaf); both sides pass it on.
    return jax.tree.map(lambda k, d, g: d if k else g, keep, decayed, updates), state

  return optax.GradientTransformation(inner.init, update)


def muon(
  learning_rate: optax.ScalarOrSchedule,
  beta: float = 0.95,
  nesterov: bool = True,
  ns_steps: int = 5,
  ns_coeffs="quintic",
  method: str = "newton_schulz",
  weight_decay: float = 0.0,
  scale: str = "shape",
  adam_learning_rate: optax.ScalarOrSchedule | None = None,
  adam_b1: float = 0.9,
  adam_b2: float = 0.95,
  adam_eps: float = 1e-8,
  adam_weight_decay: float = 0.0,
  weight_decay_mask=None,
  mu_dtype: Any | None = None,
  compute_dtype: Any | None = None,
  gram: bool | None = None,
  routing: Callable[[Any, Any], bool] | None = None,
  owner_layout: bool | None = None,
) -> optax.GradientTransformation:
  """Muon on the leaves ``routing`` selects, AdamW on the others.

  Args:
    learning_rate: η of the Muon side (a float or an optax schedule).
    beta: momentum decay β.
    nesterov: Nesterov momentum (b1 = β²) or plain (b1 = β).
    ns_steps, ns_coeffs, method, compute_dtype, gram: how U·Vᵀ is computed
      (see `optimizers.newton_schulz`; ``method="svd"`` for the exact factor).
    weight_decay: λ of the Muon side, multiplied by η (so σ_max → 1/λ·s-ish,
      exactly s/λ with ``method="svd"``).
    scale: "shape", "rms_match" or "none" (module docstring).
    adam_learning_rate: AdamW's η (default: ``learning_rate``).
    adam_b1, adam_b2, adam_eps, adam_weight_decay: AdamW's hyperparameters.
    weight_decay_mask: which leaves decay (a pytree of bools like the params or
      a function of them, as optax), on both sides: a masked-out leaf gets
      neither λ nor ``adam_weight_decay``.
    mu_dtype: dtype of both sides' first moments.
    routing: ``routing(path, leaf) -> bool``, True for Muon; None is
      `default_muon_routing`. Under `optax.inject_hyperparams` (which takes
      callables for schedules) list it, and ``ns_steps``, in ``static_args``.
    owner_layout: orthogonalize same-shape matrices stacked, whole matrices per device
      (`optimizers.owner_layout`: no collective inside the iteration) under the ambient
      mesh (`jax.set_mesh`); None: on when that mesh has an "fsdp" axis of size > 1.
      The same update up to rounding; without a mesh it changes nothing.
  """
  routing = default_muon_routing if routing is None else routing
  muon_side = optax.chain(
    scale_by_lion_k(
      "nuclear",
      b1=beta * beta if nesterov else beta,
      b2=beta,
      mu_dtype=mu_dtype,
      tree_map=functools.partial(owner_layout_lib.tree_map, enabled=owner_layout),
      method=method,
      **(
        dict(ns_steps=ns_steps, ns_coeffs=ns_coeffs, compute_dtype=compute_dtype, gram=gram)
        if method == "newton_schulz"
        else {}
      ),
    ),
    scale_by_shape(scale),
    optax.add_decayed_weights(weight_decay, weight_decay_mask),
    optax.scale_by_learning_rate(learning_rate),
  )
  # optax.adamw's chain, with the mask applied inside the decay step so the
  # state keeps adamw's tree (optax.masked would add a MaskedState, and
  # workdirs saved before the mask reached this side could not resume).
  adam_side = optax.chain(
    optax.scale_by_adam(b1=adam_b1, b2=adam_b2, eps=adam_eps, mu_dtype=mu_dtype),
    _masked_decayed_weights(adam_weight_decay, weight_decay_mask),
    optax.scale_by_learning_rate(
      learning_rate if adam_learning_rate is None else adam_learning_rate
    ),
  )
  return optax.partition(
    {"muon": muon_side, "adam": adam_side}, lambda params: muon_labels(params, routing)
  )


# The values a config may give each hyperparameter (optimizers.domains).
DOMAINS = {
  "beta": domains.DECAY,
  "nesterov": domains.boolean(),
  "ns_steps": K_OPTION_DOMAINS["ns_steps"],
  "ns_coeffs": K_OPTION_DOMAINS["ns_coeffs"],
  "method": K_OPTION_DOMAINS["method"],
  "scale": domains.one_of(MUON_SCALES),
  "adam_learning_rate": domains.optional(domains.positive()),
  "adam_b1": domains.DECAY,
  "adam_b2": domains.DECAY,
  "adam_eps": domains.positive(),
  "adam_weight_decay": domains.nonnegative(),
  "mu_dtype": domains.DTYPE,
  "compute_dtype": domains.DTYPE,
  "gram": K_OPTION_DOMAINS["gram"],
  "owner_layout": domains.optional(domains.boolean()),
  "routing": domains.Domain(
    lambda v: v is None or callable(v), "None or a function (path, leaf) -> bool"
  ),
}
