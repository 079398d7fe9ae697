"""Which quantity went non-finite first, and the one line that says so.

The step keeps a record {"loss": s, "grads": {leaf: s}, "params": {leaf: s}}
of the first step s at which each went NaN/inf (-1: never), carried beside
the train state but not checkpointed (a checkpoint is always finite, so a
resumed run starts a fresh record). When the run stops on a non-finite
state, `describe` names the first culprits (the loss, a gradient leaf, a
parameter leaf after a finite gradient: an exploding update) and advice
that fits the config.
"""

import jax
import jax.numpy as jnp
import numpy as np

from training.metrics import leaf_name


def empty_record(params) -> dict:
  """A record of nothing non-finite yet for one seed's params."""
  never = lambda _: jnp.int32(-1)
  return {
    "loss": jnp.int32(-1),
    "grads": jax.tree.map(never, params),
    "params": jax.tree.map(never, params),
  }


def _mark(previous, step, value):
  finite = jnp.all(jnp.isfinite(value))
  return jnp.where((previous < 0) & ~finite, step, previous)


def update_record(record: dict, step, loss, grads, params) -> dict:
  """The record after a step whose loss, gradients and new params are given."""
  return {
    "loss": _mark(record["loss"], step, loss),
    "grads": record["grads"]
    if grads is None  # Nexus: the gradients stay inside the optimizer.
    else jax.tree.map(lambda r, g: _mark(r, step, g), record["grads"], grads),
    "params": jax.tree.map(lambda r, p: _mark(r, step, p), record["params"], params),
  }


def culprits(record: dict) -> tuple[int, list[str]]:
  """(first bad step, what went non-finite at it) of one seed's host record."""
  named = [("the loss", int(record["loss"]))]
  for kind, label in (("grads", "the gradient of"), ("params", "the parameter")):
    flat = jax.tree_util.tree_flatten_with_path(record[kind])[0]
    named += [(f"{label} {leaf_name(path)}", int(step)) for path, step in flat]
  steps = [s for _, s in named if s >= 0]
  if not steps:
    return -1, []
  first = min(steps)
  return first, [name for name, s in named if s == first]


def advice(config, names: list[str]) -> str:
  """What to change, for what went non-finite and this config."""
  opt = config.optimizer
  tips = []
  if any(n.startswith("the parameter") for n in names) and not any(
    n.startswith("the gradient") or n == "the loss" for n in names
  ):
    tips.append(
      f"the update overflowed with finite gradients: lower optimizer.learning_rate "
      f"(now {opt.learning_rate})"
    )
  else:
    tips.append(f"lower optimizer.learning_rate (now {opt.learning_rate})")
    if not opt.get("grad_clip_norm", 0.0):
      tips.append("set optimizer.grad_clip_norm (now 0: no clipping), e.g. 1.0")
  if config.get("model") is not None and config.model.get("dtype") == "bfloat16":
    tips.append("or train in float32 (model.dtype)")
  return "; ".join(tips)


def describe(record_S, config, seed_offset: int = 0) -> str:
  """One phrase naming, for the seed that went bad first, what went
  non-finite at its first bad step, and the advice."""
  host = jax.device_get(record_S)
  num_seeds = np.asarray(host["loss"]).shape[0]
  best = None
  for i in range(num_seeds):
    step, names = culprits(jax.tree.map(lambda x: x[i], host))
    if names and (best is None or step < best[0]):
      best = (step, names, i)
  if best is None:
    return f"Non-finite state; {advice(config, [])}"
  step, names, i = best
  shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
  return (
    f"at step {step} (seed {seed_offset + i}) {shown} became NaN/inf first; {advice(config, names)}"
  )
