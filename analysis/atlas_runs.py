"""The atlas's runs: one train.py run per (entry, learning rate), and the choice
of each entry's learning rate on held-out inputs.

Each run trains ``seeds`` vmapped seeds of configs/relu2.py with the entry's
optimizer at one learning rate (WORKDIR/train/ENTRY_lrK); a finished run is
skipped on a rerun after its config.json is checked against what the atlas
asks (`train_runs.check_finished_run`), an interrupted one resumes.

Selection never looks at the train loss: the test inputs are split in two by
index, the first half ("validation") chooses the learning rate (the lowest
median validation loss over the run's converged seeds; a run with no
converged seed is never chosen), the second half ("test") is what the atlas
reports. Every sweep point is kept for the report.
"""

import math
from pathlib import Path

import jax
import numpy as np

from analysis import train_runs
from configs.common import OPTIMIZER_DEFAULTS, pack_arg
from training import tasks
from training import workdir as wd
from training.errors import UserError

REPO = train_runs.REPO


def entry_names(config) -> list[str]:
  return list(config.entries.keys())


def base_learning_rate(config, entry: str) -> float:
  e = config.entries[entry]
  return float(e.overrides.get("learning_rate", OPTIMIZER_DEFAULTS[e.optimizer]["learning_rate"]))


def learning_rates(config, entry: str) -> list[float]:
  base = base_learning_rate(config, entry)
  return [float(f"{base * m:.6g}") for m in config.lr_multipliers]


def run_dir(workdir: Path, entry: str, k: int) -> Path:
  return Path(workdir) / "train" / f"{entry}_lr{k}"


def overrides(config, entry: str, lr: float) -> dict:
  """{"optimizer.KEY" | "data.KEY": value}: what the atlas sets beyond the variant."""
  e = config.entries[entry]
  out = {
    "optimizer.learning_rate": lr,
    "optimizer.weight_decay": float(config.weight_decay),
    "optimizer.schedule": config.schedule,
    "optimizer.warmup_steps": int(config.warmup_steps),
    "optimizer.final_lr_fraction": float(config.final_lr_fraction),
  }
  if "adam_weight_decay" in OPTIMIZER_DEFAULTS[e.optimizer]:
    out["optimizer.adam_weight_decay"] = float(config.weight_decay)  # vectors decay too
  out.update({f"optimizer.{k}": v for k, v in e.overrides.items() if k != "learning_rate"})
  out.update({f"data.{k}": v for k, v in config.task.items()})
  return out


def train_command(config, entry: str, lr: float, out: Path) -> list[str]:
  variant = pack_arg(
    optimizer=config.entries[entry].optimizer,
    width=config.width,
    seeds=config.seeds,
    steps=config.num_steps,
  )
  return train_runs.train_py_command(
    config.train_config, variant, out, overrides=overrides(config, entry, lr)
  )


def run_commands(config, workdir: Path) -> dict[tuple[str, int], tuple[Path, list[str], float]]:
  """{(entry, k): (run dir, train.py command, learning rate)} of the whole grid."""
  out = {}
  for entry in entry_names(config):
    if config.entries[entry].optimizer not in OPTIMIZER_DEFAULTS:
      raise UserError(
        f"Atlas entry {entry!r}: unknown optimizer {config.entries[entry].optimizer!r}; "
        f"known: {', '.join(sorted(OPTIMIZER_DEFAULTS))}."
      )
    for k, lr in enumerate(learning_rates(config, entry)):
      d = run_dir(workdir, entry, k)
      out[(entry, k)] = (d, train_command(config, entry, lr, d), lr)
  return out


def train_all(config, workdir: Path) -> dict:
  commands = run_commands(config, workdir)
  expected = {d: dict(overrides(config, e, lr)) for (e, _), (d, _, lr) in commands.items()}
  return train_runs.train_runs(
    [(d, cmd) for d, cmd, _ in commands.values()], config.parallel, expected
  )


def split_test(task) -> tuple[tuple, tuple]:
  """(validation, test): the test inputs' first and second halves by index."""
  x, y = task.test
  half = x.shape[0] // 2
  if half < 1:
    raise UserError(f"The atlas needs n_test ≥ 2 (validation and test halves), got {x.shape[0]}.")
  return (x[:half], y[:half]), (x[half:], y[half:])


def seed_losses(task, params_S) -> dict[str, np.ndarray]:
  """{"train", "validation", "test": (S,) losses} of every seed's params."""
  validation, test = split_test(task)
  loss = jax.jit(jax.vmap(lambda p, batch: task.metric(p, batch)["loss"], in_axes=(0, None)))
  return {
    name: np.asarray(loss(params_S, batch))
    for name, batch in (("train", task.train), ("validation", validation), ("test", test))
  }


def select(config, workdir: Path, zero_loss: float) -> dict:
  """{entry: {"chosen": k | None, "learning_rate", "run_dir", "sweep": [point, ...]}}.

  A point is one learning rate: its per-seed losses, which seeds converged
  (train loss ≤ converged_fraction × the zero predictor's), and its median
  validation loss over the converged seeds (NaN if none)."""
  threshold = config.converged_fraction * zero_loss
  out = {}
  for (entry, k), (d, _, lr) in run_commands(config, workdir).items():
    cfg, params = wd.load_params(d)
    losses = seed_losses(tasks.relu2_task(cfg), params)
    converged = losses["train"] <= threshold
    val = losses["validation"][converged]
    point = {
      "k": k,
      "learning_rate": lr,
      "run_dir": str(d),
      "converged": converged.tolist(),
      "median_validation_loss": float(np.median(val)) if val.size else math.nan,
      **{f"{s}_loss": v.tolist() for s, v in losses.items()},
    }
    out.setdefault(entry, {"sweep": []})["sweep"].append(point)
  for item in out.values():
    item.update(choose(item["sweep"]), convergence_threshold=threshold)
  return out


def choose(sweep: list[dict]) -> dict:
  """{"chosen": k, "learning_rate", "run_dir"} of the point with the lowest
  median validation loss (over its converged seeds); all None when no point
  has a converged seed. The train loss plays no part."""
  scored = [p for p in sweep if math.isfinite(p["median_validation_loss"])]
  if not scored:
    return {"chosen": None, "learning_rate": None, "run_dir": None}
  best = min(scored, key=lambda p: p["median_validation_loss"])
  return {"chosen": best["k"], "learning_rate": best["learning_rate"], "run_dir": best["run_dir"]}
