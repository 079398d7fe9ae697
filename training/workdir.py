"""The workdir format, in one place: training writes it, analysis reads it.

    WORKDIR/config.json          the resolved config (ConfigDict.to_dict)
    WORKDIR/metrics.jsonl        one JSON object per logged step: step, train_loss
                                 (mean over seeds), train_loss_per_seed, ...
    WORKDIR/summary.json         written when the run finishes
    WORKDIR/tensorboard/         tensorboardX event files
    WORKDIR/tokenizer/           a trained BPE tokenizer (data.tokenizer = "bpe")
    WORKDIR/checkpoints/STEP/    orbax: "params" (the parameter pytree, every
                                 leaf with a leading seed axis), "train_state"
                                 (step, optimizer state, RNG, data keys),
                                 "data_iterator" (JSON)

Seed i of a run (i < config.num_seeds) is the network trained from seed
config.seed + i; it is index i of the leading axis of every params leaf. A
GPT-2 run has one seed, stored with a leading axis of size 1 the same way.
"""

import contextlib
import fcntl
import json
import os
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from flax import traverse_util

from training.errors import UserError

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
TENSORBOARD_DIR = "tensorboard"
CHECKPOINT_DIR = "checkpoints"
PARAMS_ITEM = "params"
TRAIN_STATE_ITEM = "train_state"
DATA_ITEM = "data_iterator"
LOCK_FILE = ".lock"


class WorkdirBusy(RuntimeError):
  """Another live process holds the workdir's lock."""


@contextlib.contextmanager
def locked(workdir: Path):
  """Holds an exclusive flock on WORKDIR/.lock (it holds the owner's pid) for
  the block. The kernel drops the lock when its process dies, so a stale lock
  file of a killed run never blocks; a live owner raises WorkdirBusy."""
  path = Path(workdir) / LOCK_FILE
  with path.open("a+") as f:
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      f.seek(0)
      owner = f.read().strip() or "unknown"
      raise WorkdirBusy(
        f"{workdir} is in use by another process (pid {owner}); wait for it "
        "to finish or stop it, or use another --workdir."
      ) from None
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def flatten(config) -> dict[str, Any]:
  """{"a.b": value} of a ConfigDict or nested dict (configs compared field by field)."""
  if isinstance(config, ml_collections.ConfigDict):
    config = config.to_dict()
  return traverse_util.flatten_dict(dict(config), sep=".")


def config_json(config) -> dict:
  """The config as config.json holds it (JSON types only)."""
  return json.loads(json.dumps(config.to_dict(), default=str))


def write_json_atomic(path: Path, data: Any, sort_keys: bool = True) -> None:
  """Writes path via a temp file and a rename: a kill never leaves half a file."""
  tmp = path.with_name(path.name + ".tmp")
  try:
    tmp.write_text(json.dumps(data, indent=2, sort_keys=sort_keys) + "\n")
  except OSError:
    tmp.unlink(missing_ok=True)  # A full disk: leave no half file behind.
    raise
  os.replace(tmp, path)


def load_config(workdir) -> ml_collections.ConfigDict:
  path = Path(workdir) / CONFIG_FILE
  if not path.exists():
    raise UserError(f"{path} not found: is {workdir} a train.py workdir?")
  return ml_collections.ConfigDict(json.loads(path.read_text()))


def seeds(config) -> list[int]:
  """The seed of each index of the leading params axis."""
  return [config.seed + i for i in range(config.num_seeds)]


def checkpoint_steps(workdir) -> list[int]:
  """The steps of the finalized checkpoints (unfinished saves are not listed)."""
  directory = Path(workdir).resolve() / CHECKPOINT_DIR
  if not directory.exists():
    return []
  # orbax's own listing (finalized steps only), without opening a manager,
  # which logs three warnings per read-only open.
  return sorted(ocp.path.step.checkpoint_steps(directory))


def load_params(workdir, step: int | None = None) -> tuple[ml_collections.ConfigDict, Any]:
  """(config, params) of the checkpoint at ``step`` (default: the latest);
  params is a pytree of numpy arrays, each with a leading seed axis."""
  config = load_config(workdir)
  steps = checkpoint_steps(workdir)
  if not steps:
    raise UserError(f"No checkpoint in {Path(workdir) / CHECKPOINT_DIR}.")
  step = steps[-1] if step is None else step
  if step not in steps:
    raise ValueError(f"No checkpoint at step {step} in {workdir}; have {steps}.")
  directory = Path(workdir).resolve() / CHECKPOINT_DIR  # orbax: absolute paths.
  options = ocp.CheckpointManagerOptions(read_only=True)
  handlers = {
    PARAMS_ITEM: ocp.StandardCheckpointHandler(),
    TRAIN_STATE_ITEM: ocp.StandardCheckpointHandler(),
    DATA_ITEM: ocp.JsonCheckpointHandler(),
  }
  with ocp.CheckpointManager(directory, options=options, item_handlers=handlers) as manager:
    # A numpy target: without one orbax rebuilds the saving mesh, which fails when the run
    # was saved sharded over other devices than this process has. np.empty touches no memory.
    metadata = manager.item_metadata(step)[PARAMS_ITEM]
    target = jax.tree.map(lambda m: np.empty(m.shape, m.dtype), metadata)
    restored = manager.restore(
      step, args=ocp.args.Composite(**{PARAMS_ITEM: ocp.args.StandardRestore(target)})
    )
  return config, jax.tree.map(np.asarray, restored[PARAMS_ITEM])


def seed_params(params, index: int):
  """The params of one seed (index along the leading axis)."""
  return jax.tree.map(lambda x: x[index], params)


def read_metrics(workdir) -> list[dict]:
  path = Path(workdir) / METRICS_FILE
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def read_summary(workdir) -> dict:
  return json.loads((Path(workdir) / SUMMARY_FILE).read_text())
