"""GPT-2's ``init_from``: a run starts from another run's parameters ("spawning" from a
common checkpoint), with a fresh optimizer state (training.gpt2). Everything that cannot
fit is refused in one line before the run writes anything."""

import jax
import numpy as np

from training import workdir as wd
from training.errors import UserError


def start_params(config, init) -> dict | None:
  """The parameters config.init_from names (that GPT-2 workdir's checkpoint at
  init_from_step, -1: its latest; its first seed), checked against this model's shapes
  and cast to its dtypes; None without init_from. Errors are one line (UserError)."""
  source = config.get("init_from", "")
  if not source:
    return None
  step = config.get("init_from_step", -1)
  try:
    source_config, params = wd.load_params(source, None if step < 0 else step)
  except ValueError as e:  # No checkpoint at that step: the message lists the steps.
    raise UserError(f"Config field init_from={source!r}: {e}") from None
  if source_config.get("model", {}).get("name") != "gpt2":
    raise UserError(f"Config field init_from={source!r} is not a GPT-2 run's workdir.")
  have = {
    jax.tree_util.keystr(k): v
    for k, v in jax.tree_util.tree_leaves_with_path(wd.seed_params(params, 0))
  }
  want, treedef = jax.tree_util.tree_flatten_with_path(jax.eval_shape(init, config.seed)["params"])
  leaves = []
  for path, ref in want:
    name = jax.tree_util.keystr(path)
    got = have.get(name)
    if got is None or got.shape != ref.shape:
      raise UserError(
        f"Config field init_from={source!r}: its parameter {name} is "
        f"{None if got is None else got.shape}, this model's {ref.shape}; start from a run "
        "of the same model size, vocabulary and seq_len."
      )
    leaves.append(np.asarray(got, ref.dtype))
  return jax.tree.unflatten(treedef, leaves)
