"""Optimizers that read the step's per-microbatch gradients (cross-fitted AdamW).

Their ``update`` takes ``microbatch_grads=`` (the params' tree, a leading
microbatch axis on every leaf). The config side asks `needs_microbatch_grads`
and refuses a trainer that cannot give them (`check_microbatches`); the
trainer's side asks the built optimizer's state (`wants_microbatch_grads`).
"""

from collections.abc import Mapping
from typing import Any

from optimizers import crossfit
from optimizers.factory import nexus_enabled
from optimizers.registry import get_optimizer


def needs_microbatch_grads(opt_config: Mapping[str, Any]) -> bool:
  """Whether the section's optimizer reads the step's per-microbatch gradients."""
  fn = get_optimizer(dict(opt_config)["name"]).needs_microbatch_grads
  return fn is not None and bool(fn(dict(opt_config)))


def check_microbatches(opt_config: Mapping[str, Any], num_microbatches: int | None) -> None:
  """A ValueError (one line) when the section needs per-microbatch gradients and
  the trainer cannot give them: ``num_microbatches`` None (relu2: full batch;
  GPT-2 with Nexus) or too few for the mode."""
  cfg = dict(opt_config)
  if not needs_microbatch_grads(cfg):
    return
  if nexus_enabled(cfg):
    num_microbatches = None
  if cfg["name"] == "crossfit_adamw":
    crossfit.check_microbatches(cfg.get("mode", "full"), num_microbatches)
  elif num_microbatches is None or num_microbatches < 2:
    raise ValueError(
      f"optimizer {cfg['name']!r} needs per-microbatch gradients: a GPT-2 run with "
      "grad_accum_steps >= 2."
    )


def wants_microbatch_grads(opt_state) -> bool:
  """Whether a built optimizer's state asks the trainer for ``microbatch_grads``
  (decided at trace time from the state's types, so any wrapper works)."""
  return crossfit.wants_microbatch_grads(opt_state)
