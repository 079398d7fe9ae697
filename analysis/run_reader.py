"""Reading train.py runs back for analysis, in one place: relu2 runs with all
their seeds stacked (connectivity, the sweep) and GPT-2 runs' models and text
batches (gpt2_spectra, nexus_mixture). The on-disk format is
training/workdir.py; the model and data come from training/tasks.py, the same
builder the trainer used.
"""

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from analysis import barriers
from models import gpt2
from training import tasks
from training import workdir as wd
from training.errors import UserError

# Config sections whose every field must agree between the runs compared: the
# same data (so the losses are the same function) and the same architecture
# (so the parameters can be interpolated).
SHARED_SECTIONS = ("data", "model")
BARRIER_KINDS = barriers.BARRIER_KINDS


class ConnectivityError(UserError):
  """Runs that cannot be compared; the message names the run and the field."""


class Run(NamedTuple):
  name: str
  workdir: str
  config: Any  # ml_collections.ConfigDict, as saved by train.py.
  params: Any  # Every leaf with a leading seed axis.
  seeds: list
  summary: dict


# ---------------------------------------------------------------------------
# Loading runs.


def load_run(workdir, name: str | None = None) -> Run:
  """The finished run in ``workdir`` (ConnectivityError if missing/unfinished)."""
  path = Path(workdir)
  if not path.is_dir():
    raise ConnectivityError(f"Run directory {path} does not exist.")
  if not (path / wd.CONFIG_FILE).exists():
    raise ConnectivityError(f"{path} has no {wd.CONFIG_FILE}: not a train.py workdir.")
  if not (path / wd.SUMMARY_FILE).exists():
    raise ConnectivityError(
      f"{path} has no {wd.SUMMARY_FILE}: the run is unfinished; "
      "rerun its train.py command to finish it."
    )
  summary = wd.read_summary(path)
  try:
    config, params = wd.load_params(path)
  except (FileNotFoundError, ValueError) as e:
    raise ConnectivityError(f"{path}: {e}") from None
  if config.model.name != "relu2":
    raise ConnectivityError(
      f"{path} is a {config.model.name!r} run; connectivity handles relu2 runs."
    )
  return Run(name or path.name, str(path), config, params, wd.seeds(config), summary)


def load_runs(workdirs: Sequence[str]) -> list[Run]:
  """Loads every run; names are the directory names (made unique)."""
  runs, names = [], []
  for i, d in enumerate(workdirs):
    name = Path(d).name or f"run{i}"
    if name in names:
      name = f"{name}#{i}"
    names.append(name)
    runs.append(load_run(d, name))
  check_compatible(runs)
  return runs


def check_compatible(runs: Sequence[Run]) -> None:
  """Raises ConnectivityError naming the first field where a run differs from the first."""
  if not runs:
    raise ConnectivityError("No runs given: pass --runs=DIR[,DIR...].")
  ref = runs[0]
  for run in runs[1:]:
    for section in SHARED_SECTIONS:
      a = {f"{section}.{k}": v for k, v in wd.flatten(ref.config[section]).items()}
      b = {f"{section}.{k}": v for k, v in wd.flatten(run.config[section]).items()}
      for key in sorted(set(a) | set(b)):
        if a.get(key, "<absent>") != b.get(key, "<absent>"):
          raise ConnectivityError(
            f"Runs {ref.name} and {run.name} differ in {key} ({a.get(key, '<absent>')!r} vs "
            f"{b.get(key, '<absent>')!r}); connectivity compares runs of one model on one task."
          )


class Model(NamedTuple):
  """One solution: index into the stacked params, its run, seed and optimizer."""

  index: int
  run: str
  seed: int
  optimizer: str
  ball: str  # The label of its optimizer's ball (optimizer, or optimizer@run).


def stack_models(runs: Sequence[Run]) -> tuple[Any, list[Model]]:
  """All seeds of all runs along one leading axis N, and who is who."""
  params_N = jax.tree.map(lambda *xs: np.concatenate(xs, axis=0), *[r.params for r in runs])
  balls = ball_labels(runs)
  runs_seeds = [(r, s) for r in runs for s in r.seeds]
  models = [
    Model(i, r.name, s, r.config.optimizer.name, balls[r.name])
    for i, (r, s) in enumerate(runs_seeds)
  ]
  return params_N, models


def ball_labels(runs: Sequence[Run]) -> dict[str, str]:
  """run name -> its ball: the optimizer's name, or name@run when runs of one
  optimizer differ in their optimizer settings (different balls)."""
  by_name = {}
  for r in runs:
    by_name.setdefault(r.config.optimizer.name, set()).add(opt_key(r.config.optimizer))
  return {
    r.name: r.config.optimizer.name
    if len(by_name[r.config.optimizer.name]) == 1
    else f"{r.config.optimizer.name}@{r.name}"
    for r in runs
  }


def opt_key(opt_config) -> str:
  return json.dumps(
    dict(opt_config.to_dict() if hasattr(opt_config, "to_dict") else opt_config),
    sort_keys=True,
    default=str,
  )


# ---------------------------------------------------------------------------
# GPT-2 runs.


def model_for(run_dir: Path) -> tuple[gpt2.GPT2, dict]:
  """(the run's model, dropout off, its config as a dict)."""
  config = wd.load_config(run_dir)
  vocab = wd.read_summary(run_dir)["vocab_size"]
  return tasks.gpt2_model(config, vocab, dropout=0.0), config.to_dict()


def text_batches(
  run_dir: Path,
  split: str,
  batch_size: int,
  num_batches: int,
  sources: list[str] | None = None,
) -> dict[str, dict[str, np.ndarray]]:
  """{source: {"inputs", "targets": (L, batch_size, seq_len)}}: the first L ≤
  num_batches batches of the split's windows in order (the same every call),
  tokenized as the run was (its tokenizer, a BPE one read from RUN_DIR/tokenizer),
  for the run's sources (or ``sources``: e.g. the OOD ones with split="test")."""
  config = wd.load_config(run_dir)
  tokenizer = tasks.gpt2_tokenizer(config, run_dir)
  return tasks.eval_batches(config, split, tokenizer, sources, batch_size, num_batches)
