"""What the matrix optimizers of the zoo (PolarGrad, Kaon, Freon, NorMuon, SF-NorMuon, MiMuon, Dion, Pion, Scion, the symmetric stack) share.

Each of them is "a matrix rule on the leaves `default_muon_routing` selects, AdamW
on the others", exactly as `optimizers.muon.muon` splits a tree: `routed` is that
`optax.partition`, `adamw_side` the AdamW chain, `ADAM_DOMAINS` its
hyperparameters. The rest are small helpers the four modules would otherwise
repeat: the state dtype (float32 unless asked), splitting a tree of per-leaf
tuples, and finding a module's state inside any wrapper (partition, chain,
inject_hyperparams, MultiSteps, a leading seed axis) for the functions that read
it (`sf_normuon.evaluation_params`, `mimuon.muon_branch_fraction`).
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from optimizers import domains
from optimizers.muon import default_muon_routing, muon_labels

# The AdamW side's hyperparameters, named as in `optimizers.muon.muon`.
ADAM_DOMAINS = {
  "adam_learning_rate": domains.optional(domains.positive()),
  "adam_b1": domains.DECAY,
  "adam_b2": domains.DECAY,
  "adam_eps": domains.positive(),
  "adam_weight_decay": domains.nonnegative(),
}
ROUTING_DOMAIN = domains.Domain(
  lambda v: v is None or callable(v), "None or a function (path, leaf) -> bool"
)


def adamw_side(
  learning_rate: optax.ScalarOrSchedule,
  b1: float,
  b2: float,
  eps: float,
  weight_decay: float,
  mask,
  mu_dtype: Any | None = None,
) -> optax.GradientTransformation:
  """optax.adamw's chain (decoupled decay λ·η·θ, ``mask`` as optax's)."""
  return optax.chain(
    optax.scale_by_adam(b1=b1, b2=b2, eps=eps, mu_dtype=mu_dtype),
    optax.add_decayed_weights(weight_decay, mask),
    optax.scale_by_learning_rate(learning_rate),
  )


def routed(
  matrix_side: optax.GradientTransformation,
  other_side: optax.GradientTransformation,
  routing: Callable[[Any, Any], bool] | None = None,
) -> optax.GradientTransformation:
  """``matrix_side`` on the leaves ``routing(path, leaf)`` selects (None:
  `default_muon_routing`), ``other_side`` on the rest; labels "muon"/"adam" as
  `optimizers.muon.muon`, so the state tree has the same shape."""
  routing = default_muon_routing if routing is None else routing
  return optax.partition(
    {"muon": matrix_side, "adam": other_side}, lambda params: muon_labels(params, routing)
  )


def state_dtype(mu_dtype) -> jnp.dtype:
  """The dtype the matrix states are kept in: float32 unless ``mu_dtype`` says
  otherwise (bf16 params still accumulate their moments in f32)."""
  return jnp.dtype(jnp.float32 if mu_dtype is None else mu_dtype)


def check_matrix(leaf, who: str) -> None:
  """Refuses (at init, so before any step) a leaf of rank < 2."""
  if jnp.ndim(leaf) < 2:
    raise ValueError(
      f"{who} needs matrices (rank >= 2, stacked as (..., fan_in, fan_out)); got a leaf of "
      f"shape {jnp.shape(leaf)}: route it to AdamW (the routing argument)."
    )


def unzip(structure, tree_of_tuples, n: int) -> tuple:
  """Splits the tuples a `jax.tree.map` over ``structure`` returned into ``n`` trees."""
  return tuple(jax.tree.map(lambda _, out: out[i], structure, tree_of_tuples) for i in range(n))


def find_states(state, state_type: type) -> list:
  """Every ``state_type`` instance inside an optimizer state, in tree order."""
  found = []

  def visit(node):
    if isinstance(node, state_type):
      found.append(node)
      return True
    return False

  jax.tree_util.tree_flatten(state, is_leaf=visit)
  return found


def find_state(state, state_type: type, who: str):
  """The one ``state_type`` inside ``state``; a ValueError naming ``who`` if none."""
  found = find_states(state, state_type)
  if not found:
    raise ValueError(f"No {state_type.__name__} in this optimizer state: was it built by {who}?")
  if len(found) > 1:
    raise ValueError(f"{len(found)} {state_type.__name__}s in this optimizer state; expected one.")
  return found[0]
