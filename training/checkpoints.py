"""One checkpoint path for both trainers: orbax, async, cadence by orbax.

A checkpoint holds three items (training/workdir.py): "params" (every leaf
with a leading seed axis), "train_state" (step and the rest of the per-seed
state: optimizer state, RNG, data keys, the first non-finite step) and
"data_iterator" (JSON: relu2's (step, order) record, or GPT-2's grain state).
The trainer's state is {"step": (), "seeds": {"params", ...}} with a seed axis
on every leaf; GPT-2 keeps one seed and is stacked to that layout to save.
"""

import errno
import shutil
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from orbax.checkpoint import checkpoint_managers

from training import workdir as wd
from training.errors import ConfigError, DiskFullError, NonFiniteError, one_line


def manager(workdir: Path, config) -> ocp.CheckpointManager:
  """Async saves every config.checkpoint_every steps (orbax's own interval
  policy, which also answers orbax's multi-host preemption notice); the last
  step and a SIGTERM save with force=True."""
  policy = checkpoint_managers.AnySavePolicy(
    [
      checkpoint_managers.FixedIntervalPolicy(config.checkpoint_every),
      checkpoint_managers.PreemptionCheckpointingPolicy(),
    ]
  )
  return ocp.CheckpointManager(
    workdir / wd.CHECKPOINT_DIR,
    options=ocp.CheckpointManagerOptions(
      max_to_keep=config.keep_checkpoints,
      enable_async_checkpointing=True,
      save_decision_policy=policy,
      cleanup_tmp_directories=True,
    ),
  )  # Unfinished saves of a killed run.


def _split(state: dict) -> tuple[Any, dict]:
  seeds = dict(state["seeds"])
  return seeds.pop("params"), {"step": state["step"], "seeds": seeds}


# Free space kept beyond a checkpoint's bytes: orbax's metadata, metrics.jsonl
# and the TensorBoard events still have to be flushed after a refused save.
SPACE_MARGIN_BYTES = 1 << 20


def _bytes(tree) -> int:
  # jax.Array.nbytes is the global size, read without gathering the shards of other processes.
  return sum(int(getattr(x, "nbytes", None) or np.asarray(x).nbytes) for x in jax.tree.leaves(tree))


def disk_full(workdir: Path, what: str) -> DiskFullError:
  """The one line of a full disk: what failed, the space left, the last good checkpoint."""
  workdir = Path(workdir)
  free = shutil.disk_usage(workdir).free
  steps = wd.checkpoint_steps(workdir)
  intact = (
    f"the last good checkpoint, step {steps[-1]} in {workdir / wd.CHECKPOINT_DIR}, is intact"
    if steps
    else "there is no checkpoint yet"
  )
  return DiskFullError(
    f"No space left on the device for {what} ({free / 2**20:.1f} MiB free in {workdir}); "
    f"{intact}: free some space and rerun the same command to resume."
  )


def is_disk_full(error: BaseException) -> bool:
  """An OSError ENOSPC, or orbax/tensorstore's wrapping of one (a ValueError)."""
  while error is not None:
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
      return True
    if "No space left on device" in str(error) or "os_error_code='28'" in str(error):
      return True
    error = error.__cause__ or error.__context__
  return False


def save(mgr: ocp.CheckpointManager, state: dict, data_state: dict) -> None:
  """Saves the stacked state and the data-iterator JSON at state["step"];
  refuses (DiskFullError) before writing when the disk cannot hold it."""
  params, rest = _split(state)
  step = int(state["step"])
  needed = _bytes(state) + SPACE_MARGIN_BYTES
  if shutil.disk_usage(mgr.directory).free < needed:
    raise disk_full(
      Path(mgr.directory).parent, f"checkpoint {step} (about {needed / 2**20:.1f} MiB)"
    )
  mgr.save(
    step,
    force=True,
    args=ocp.args.Composite(
      **{
        wd.PARAMS_ITEM: ocp.args.StandardSave(params),
        wd.TRAIN_STATE_ITEM: ocp.args.StandardSave(rest),
        wd.DATA_ITEM: ocp.args.JsonSave(data_state),
      }
    ),
  )


def restore(mgr: ocp.CheckpointManager, template: dict, step: int) -> tuple[dict, dict]:
  """(state, data-iterator JSON) of checkpoint ``step``, in template's tree
  (orbax gives plain containers back: the optimizer's NamedTuples are rebuilt)."""
  params, rest = _split(template)
  restored = mgr.restore(
    step,
    args=ocp.args.Composite(
      **{
        wd.PARAMS_ITEM: ocp.args.StandardRestore(params),
        wd.TRAIN_STATE_ITEM: ocp.args.StandardRestore(rest),
        wd.DATA_ITEM: ocp.args.JsonRestore(),
      }
    ),
  )
  stacked = {
    "step": restored[wd.TRAIN_STATE_ITEM]["step"],
    "seeds": {"params": restored[wd.PARAMS_ITEM], **restored[wd.TRAIN_STATE_ITEM]["seeds"]},
  }
  leaves = jax.tree.leaves(stacked)
  return jax.tree.unflatten(jax.tree.structure(template), leaves), restored[wd.DATA_ITEM]


def restore_latest(
  mgr: ocp.CheckpointManager, template: dict
) -> tuple[int, dict | None, dict | None]:
  """(step, state, data JSON) of the newest checkpoint that restores; (0, None,
  None) when there is none. A newest one that fails while an older one
  restores is corrupt (a kill mid-write on a file system without atomic
  renames, a truncated file, a missing item): it is moved aside to
  checkpoints/bad-STEP, never deleted, and one line says so. When no
  checkpoint restores, nothing is moved: the config, not the files, is the
  likelier culprit, and the error names the newest step."""
  steps = sorted(mgr.all_steps(), reverse=True)
  failures = []
  for step in steps:
    try:
      state, data_state = restore(mgr, template, step)
    except Exception as e:  # orbax/tensorstore raise many types; judged below
      failures.append((step, e))
      continue
    for bad, error in failures:
      aside = Path(mgr.directory) / f"bad-{bad}"
      Path(mgr.directory, str(bad)).rename(aside)
      logging.warning(
        "Checkpoint %d does not restore (%s); moved it to %s and resumed from step %d.",
        bad,
        one_line(error)[:300],
        aside,
        step,
      )
    if failures:
      mgr.reload()
    return step, state, data_state
  if failures:
    step, error = failures[0]
    raise ConfigError(
      f"No checkpoint in {mgr.directory} fits this config (step {step}: "
      f"{one_line(error)[:300]}); a changed model or optimizer cannot resume these "
      "weights (--override_config only changes what they allow). Nothing was changed: "
      "resume with the run's config.json, or use a new --workdir."
    )
  return 0, None, None


def check_data_state(step: int, restored: dict, expected: dict | None) -> None:
  """A restored data-iterator record must be the config's (relu2) or at least
  for the same step (GPT-2): else the data order would silently change."""
  if expected is not None and restored != expected:
    raise ConfigError(
      f"Checkpoint {step}'s data iterator {restored} does not match this "
      f"config's {expected}; use the config the run was started with."
    )
  if restored.get("step") != step:
    raise ConfigError(
      f"Checkpoint {step}'s data iterator state is for step "
      f"{restored.get('step')}; the checkpoint is corrupt."
    )


def stack_seed(state: dict, to_host: bool = True) -> dict:
  """One seed's {"step", "params", ...} as the checkpoint layout (seed axis 1): a host copy,
  or (``to_host=False``, traceable) jax arrays, for jit with the stacked shardings."""
  if to_host:
    state = jax.tree.map(np.asarray, jax.device_get(state))
  seeds = {k: v for k, v in state.items() if k != "step"}
  return {"step": state["step"], "seeds": jax.tree.map(lambda x: x[None], seeds)}


def unstack_seed(stacked: dict) -> dict:
  return {"step": stacked["step"], **jax.tree.map(lambda x: x[0], stacked["seeds"])}


def raise_if_nonfinite(first_bad_S, mgr: ocp.CheckpointManager, detail) -> None:
  """Stops the run if any seed's state went non-finite (first_bad_S[i] ≥ 0 is
  the step it did), with ``detail()`` (training.finite.describe: what went
  NaN/inf first, and advice) and the last good checkpoint."""
  first_bad_S = np.asarray(first_bad_S)
  if (first_bad_S < 0).all():
    return
  mgr.wait_until_finished()
  last = mgr.latest_step()
  where = (
    f"the last good checkpoint is step {last} in {mgr.directory}"
    if last is not None
    else "there is no checkpoint yet"
  )
  raise NonFiniteError(
    f"Training stopped: {detail()}. {where[0].upper() + where[1:]}; rerun after the change "
    "(with --override_config to resume from that checkpoint)."
  )
