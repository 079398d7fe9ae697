"""The workdir format, in one place: train.py writes it, analysis reads it.

    WORKDIR/config.json          the resolved config (ConfigDict.to_dict)
    WORKDIR/metrics.jsonl        one JSON object per logged step: step, train_loss
                                 (mean over seeds), train_loss_per_seed, ...
    WORKDIR/summary.json         written when the run finishes
    WORKDIR/tensorboard/         tensorboardX event files
    WORKDIR/checkpoints/STEP/    orbax: "params" (the parameter pytree, every
                                 leaf with a leading seed axis), "train_state"
                                 (step, optimizer state, RNG, data keys),
                                 "data_iterator" (JSON)

Seed i of a run (i < config.num_seeds) is the network trained from seed
config.seed + i; it is index i of the leading axis of every params leaf.
"""

import json
from pathlib import Path
from typing import Any, Optional

import ml_collections
import numpy as np
import orbax.checkpoint as ocp

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
TENSORBOARD_DIR = "tensorboard"
CHECKPOINT_DIR = "checkpoints"
PARAMS_ITEM = "params"
TRAIN_STATE_ITEM = "train_state"
DATA_ITEM = "data_iterator"


def load_config(workdir) -> ml_collections.ConfigDict:
  path = Path(workdir) / CONFIG_FILE
  if not path.exists():
    raise FileNotFoundError(f"{path} not found: is {workdir} a train.py workdir?")
  return ml_collections.ConfigDict(json.loads(path.read_text()))


def flatten(config) -> dict[str, Any]:
  """{"a.b": value} of a ConfigDict or nested dict (config.json compared field by field)."""
  out = {}
  for key, value in (config.items() if hasattr(config, "items") else []):
    if isinstance(value, (dict, ml_collections.ConfigDict)):
      out.update({f"{key}.{k}": v for k, v in flatten(value).items()})
    else:
      out[key] = value
  return out


def seeds(config) -> list[int]:
  """The seed of each index of the leading params axis."""
  return [config.seed + i for i in range(config.num_seeds)]


def checkpoint_steps(workdir) -> list[int]:
  """The steps of the finalized checkpoints (unfinished saves are not listed)."""
  directory = Path(workdir) / CHECKPOINT_DIR
  if not directory.exists():
    return []
  with ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(
      read_only=True)) as manager:
    return sorted(manager.all_steps())


def load_params(workdir, step: Optional[int] = None
                ) -> tuple[ml_collections.ConfigDict, Any]:
  """(config, params) of the checkpoint at ``step`` (default: the latest);
  params is a pytree of numpy arrays, each with a leading seed axis."""
  config = load_config(workdir)
  steps = checkpoint_steps(workdir)
  if not steps:
    raise FileNotFoundError(f"No checkpoint in {Path(workdir) / CHECKPOINT_DIR}.")
  step = steps[-1] if step is None else step
  if step not in steps:
    raise ValueError(f"No checkpoint at step {step} in {workdir}; have {steps}.")
  with ocp.CheckpointManager(Path(workdir).resolve() / CHECKPOINT_DIR,  # orbax: absolute.
                             options=ocp.CheckpointManagerOptions(read_only=True)) as manager:
    restored = manager.restore(step, args=ocp.args.Composite(
        **{PARAMS_ITEM: ocp.args.StandardRestore()}))
  params = _to_numpy(restored[PARAMS_ITEM])
  return config, params


def _to_numpy(tree):
  if isinstance(tree, dict):
    return {k: _to_numpy(v) for k, v in tree.items()}
  return np.asarray(tree)


def seed_params(params, index: int):
  """The params of one seed (index along the leading axis)."""
  if isinstance(params, dict):
    return {k: seed_params(v, index) for k, v in params.items()}
  return params[index]


def read_metrics(workdir) -> list[dict]:
  path = Path(workdir) / METRICS_FILE
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def read_summary(workdir) -> dict:
  return json.loads((Path(workdir) / SUMMARY_FILE).read_text())
