"""The optimizer registry: name -> constructor, its hyperparameters, its implicit bias.

One `register_optimizer` call (in `optimizers.factory`) makes a name usable in a
config section (``optimizer.name``): the factory builds it, checks its keys,
and `optimizers.implicit_bias` reads its constraint from the same entry. Kept
apart from both so that neither imports the other.
"""

import inspect
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import optax

from optimizers.domains import Domain, check_value

if TYPE_CHECKING:
  from optimizers.implicit_bias import ImplicitBias

# Keys every optimizer section may hold; all other keys are hyperparameters.
SHARED_KEYS = (
  "name",
  "learning_rate",
  "weight_decay",
  "weight_decay_mask",
  "schedule",
  "warmup_steps",
  "decay_fraction",
  "final_lr_fraction",
  "grad_clip_norm",
  "nexus",
)

# optimizer.weight_decay_mask: which leaves decay ("matrices": rank ≥ 2 only).
WEIGHT_DECAY_MASKS = ("all", "matrices")

# Arguments the factory passes itself, so never hyperparameters.
_FACTORY_ARGS = ("learning_rate", "weight_decay", "mask")


class OptimizerEntry(NamedTuple):
  """One registered optimizer."""

  # constructor(learning_rate, weight_decay=..., mask=..., **hyperparameters).
  constructor: Callable[..., optax.GradientTransformation]
  # The keyword names a config section may add; None: any (the constructor
  # takes **kwargs, as lion_k's K options).
  hyperparameters: tuple[str, ...] | None
  # (opt_config, params) -> a Constraint per leaf, and its one-line summary.
  implicit_bias: "ImplicitBias"
  # Hyperparameters that are peak learning rates: they follow the section's
  # schedule shape (Muon's adam_learning_rate).
  scheduled: tuple[str, ...] = ()
  # hyperparameter -> its Domain (optimizers.domains); every accepted name has one.
  domains: Mapping[str, Domain] = {}
  # (params, opt_state) -> the params to evaluate, report and analyse, when they
  # are not the ones the gradient is taken at (schedule-free: the average x).
  evaluation_params: Callable[[Any, Any], Any] | None = None
  # {name: opt_state -> pytree of per-leaf values} the trainer logs and
  # summarizes (MiMuon: the fraction of Muon-branch steps per matrix).
  state_metrics: Mapping[str, Callable[[Any], Any]] = {}
  # opt_config -> whether update needs microbatch_grads= (the step's gradient per
  # microbatch, a leading axis); None: never (cross-fitted AdamW's modes do).
  needs_microbatch_grads: Callable[[Mapping[str, Any]], bool] | None = None


OPTIMIZERS: dict[str, OptimizerEntry] = {}


def keyword_names(fn: Callable, *excluded: str) -> tuple[str, ...] | None:
  """The keyword arguments of ``fn`` a config may set: its parameters minus
  learning_rate, weight_decay, mask and ``excluded``; None if it takes **kwargs."""
  params = inspect.signature(fn).parameters.values()
  if any(p.kind is p.VAR_KEYWORD for p in params):
    return None
  drop = set(_FACTORY_ARGS) | set(excluded)
  return tuple(sorted(p.name for p in params if p.name not in drop))


def register_optimizer(
  name: str,
  constructor: Callable[..., optax.GradientTransformation],
  implicit_bias: "ImplicitBias",
  domains: Mapping[str, Domain],
  hyperparameters: tuple[str, ...] | None = None,
  scheduled: tuple[str, ...] = (),
  evaluation_params: Callable[[Any, Any], Any] | None = None,
  state_metrics: Mapping[str, Callable[[Any], Any]] | None = None,
  needs_microbatch_grads: Callable[[Mapping[str, Any]], bool] | None = None,
) -> OptimizerEntry:
  """Registers ``name``; ``hyperparameters`` defaults to `keyword_names` of
  the constructor. ``domains`` must give every hyperparameter its `Domain`
  (for a **kwargs constructor: the keys it knows), so a value outside it is
  refused before anything is built."""
  if hyperparameters is None:
    hyperparameters = keyword_names(constructor)
  missing = sorted(set(hyperparameters or ()) - set(domains))
  if missing:
    raise ValueError(f"register_optimizer({name!r}): no domain for the hyperparameters {missing}.")
  entry = OptimizerEntry(
    constructor,
    hyperparameters,
    implicit_bias,
    tuple(scheduled),
    dict(domains),
    evaluation_params,
    dict(state_metrics or {}),
    needs_microbatch_grads,
  )
  OPTIMIZERS[name] = entry
  return entry


def get_optimizer(name: str) -> OptimizerEntry:
  """The entry of ``name``; raises ValueError (one line) naming the known ones."""
  if name not in OPTIMIZERS:
    raise ValueError(f"Unknown optimizer {name!r}; known: {sorted(OPTIMIZERS)}.")
  return OPTIMIZERS[name]


def check_hyperparameters(name: str, opt_config: Mapping[str, Any]) -> None:
  """Raises ValueError (one line) on a hyperparameter the optimizer does not
  accept or a value outside its domain."""
  entry = get_optimizer(name)
  for key, value in hyperparameters(opt_config).items():
    if entry.hyperparameters is not None and key not in entry.hyperparameters:
      raise ValueError(
        f"Unknown hyperparameter {key!r} for optimizer {name!r}; it "
        f"accepts {sorted(entry.hyperparameters)}. Pick the optimizer with the config variant "
        f"(':optimizer={name}') so its hyperparameters come with it."
      )
    if key in entry.domains:
      check_value("optimizer", key, value, entry.domains[key])


def hyperparameters(opt_config: Mapping[str, Any]) -> dict[str, Any]:
  """The constructor's own keyword arguments: the section minus SHARED_KEYS."""
  return {k: v for k, v in dict(opt_config).items() if k not in SHARED_KEYS}


def leaf_decays(weight_decay_mask: str, leaf) -> bool:
  """Whether ``leaf`` decays under the section's weight_decay_mask."""
  return weight_decay_mask != "matrices" or np.ndim(leaf) >= 2
