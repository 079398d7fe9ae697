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

The grid grows where the choice sits at its edge: while an entry's chosen rate
is the lowest (highest) of a grid of ≥ 3 rates, one more rate is trained below
(above) it, a further step of the grid's outermost ratio, up to
``grid_extensions`` per side (`extend_grid`). Extension points are ENTRY_lr-1,
-2, ... below and ENTRY_lrN, N+1, ... above; a rerun recomputes the same
extensions from the same finished runs.
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


def check_grid(config) -> None:
  """lr_multipliers positive and distinct; grid_extensions an int ≥ 0."""
  m = list(config.lr_multipliers)
  if not m or any(v <= 0 for v in m) or len(set(m)) < len(m):
    raise UserError(f"lr_multipliers must be positive and distinct, got {m}.")
  ext = config.get("grid_extensions", 0)
  if isinstance(ext, bool) or not isinstance(ext, int) or ext < 0:
    raise UserError(f"grid_extensions={ext!r}: an int ≥ 0 (more rates per side of the grid).")


def grid_multipliers(config, extended: tuple[int, int] = (0, 0)) -> dict[int, float]:
  """{k: multiplier}: config.lr_multipliers at k = 0..n−1, then ``extended`` =
  (below, above) more points: k = −1, −2, ... each one outermost ratio of the
  grid below its smallest, k = n, n+1, ... above its largest (ratio 3 for a
  one-point grid)."""
  m = [float(v) for v in config.lr_multipliers]
  out = dict(enumerate(m))
  s = sorted(m)
  low_ratio = s[1] / s[0] if len(s) > 1 else 3.0
  high_ratio = s[-1] / s[-2] if len(s) > 1 else 3.0
  below, above = extended
  out.update({-j: s[0] / low_ratio**j for j in range(1, below + 1)})
  out.update({len(m) - 1 + j: s[-1] * high_ratio**j for j in range(1, above + 1)})
  return out


def learning_rates(config, entry: str, extended: tuple[int, int] = (0, 0)) -> dict[int, float]:
  """{k: learning rate} of the entry's grid (`grid_multipliers` × its base rate)."""
  base = base_learning_rate(config, entry)
  return {k: float(f"{base * m:.6g}") for k, m in grid_multipliers(config, extended).items()}


def edge_entries(selection: dict) -> list[tuple[str, str]]:
  """[(entry, "lowest" | "highest")]: entries whose chosen learning rate is the smallest or
  largest of a grid of ≥ 3 rates (with 2 every choice is an edge: not flagged)."""
  out = []
  for entry, item in selection.items():
    rates = sorted(p["learning_rate"] for p in item["sweep"])
    if item["chosen"] is None or len(rates) < 3:
      continue
    chosen = chosen_point(item)
    if chosen["learning_rate"] == rates[0]:
      out.append((entry, "lowest"))
    elif chosen["learning_rate"] == rates[-1]:
      out.append((entry, "highest"))
  return out


def extend_grid(config, train, select) -> tuple[dict, dict, dict]:
  """(what was trained, {entry: (below, above)}, the selection): ``train(extended)``
  trains (or reuses) every point of the grids, ``select(extended)`` chooses; while
  a choice sits at an edge (`edge_entries`) and that side has fewer than
  config.grid_extensions extra points, one more rate is added there and trained.
  A rate beyond the edge that diverges or does worse ends that side's growth."""
  limit = int(config.get("grid_extensions", 0))
  extended = {e: (0, 0) for e in config.entries}
  trained = dict(train(extended))
  for _ in range(2 * limit + 1):
    selection = select(extended)
    grown = dict(extended)
    for entry, side in edge_entries(selection):
      below, above = extended[entry]
      if side == "lowest" and below < limit:
        grown[entry] = (below + 1, above)
      elif side == "highest" and above < limit:
        grown[entry] = (below, above + 1)
    if grown == extended:
      return trained, extended, selection
    extended = grown
    trained |= train(extended)
  return trained, extended, select(extended)


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


def run_commands(
  config, workdir: Path, extended: dict | None = None
) -> dict[tuple[str, int], tuple[Path, list[str], float]]:
  """{(entry, k): (run dir, train.py command, learning rate)} of the whole grid
  (with ``extended``'s extra points: `extend_grid`)."""
  out = {}
  for entry in entry_names(config):
    if config.entries[entry].optimizer not in OPTIMIZER_DEFAULTS:
      raise UserError(
        f"Atlas entry {entry!r}: unknown optimizer {config.entries[entry].optimizer!r}; "
        f"known: {', '.join(sorted(OPTIMIZER_DEFAULTS))}."
      )
    for k, lr in learning_rates(config, entry, (extended or {}).get(entry, (0, 0))).items():
      d = run_dir(workdir, entry, k)
      out[(entry, k)] = (d, train_command(config, entry, lr, d), lr)
  return out


def train_all(config, workdir: Path) -> tuple[dict, dict, dict]:
  """(what was trained, the grid extensions, the selection): `extend_grid`."""
  zero_loss = None

  def train(extended):
    nonlocal zero_loss
    commands = run_commands(config, workdir, extended)
    expected = {d: dict(overrides(config, e, lr)) for (e, _), (d, _, lr) in commands.items()}
    done = train_runs.train_runs(
      [(d, cmd) for d, cmd, _ in commands.values()], config.parallel, expected
    )
    if zero_loss is None:
      zero_loss = tasks.zero_predictor_loss(wd.load_config(next(iter(commands.values()))[0]))
    return done

  cache = {}  # run dir -> its seed losses: each extension round re-selects every entry
  return extend_grid(config, train, lambda ext: select(config, workdir, zero_loss, ext, cache))


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


def select(
  config, workdir: Path, zero_loss: float, extended: dict | None = None, cache: dict | None = None
) -> dict:
  """{entry: {"chosen": k | None, "learning_rate", "run_dir", "sweep": [point, ...]}}.

  A point is one learning rate: its per-seed losses, which seeds converged
  (train loss ≤ converged_fraction × the zero predictor's), and its median
  validation loss over the converged seeds (NaN if none). ``cache``: {run dir:
  losses} kept across calls, so a run is read once however often it is selected."""
  threshold = config.converged_fraction * zero_loss
  cache = {} if cache is None else cache
  out = {}
  for (entry, k), (d, _, lr) in run_commands(config, workdir, extended).items():
    if str(d) not in cache:
      cfg, params = wd.load_params(d)
      cache[str(d)] = seed_losses(tasks.relu2_task(cfg), params)
    losses = cache[str(d)]
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
    item["sweep"].sort(key=lambda p: p["learning_rate"])
    item.update(choose(item["sweep"]), convergence_threshold=threshold)
  return out


def chosen_point(item: dict) -> dict:
  """The sweep point of an entry's chosen rate (by its grid index k)."""
  return next(p for p in item["sweep"] if p["k"] == item["chosen"])


def choose(sweep: list[dict]) -> dict:
  """{"chosen": k, "learning_rate", "run_dir"} of the point with the lowest
  median validation loss (over its converged seeds); all None when no point
  has a converged seed. The train loss plays no part."""
  scored = [p for p in sweep if math.isfinite(p["median_validation_loss"])]
  if not scored:
    return {"chosen": None, "learning_rate": None, "run_dir": None}
  best = min(scored, key=lambda p: p["median_validation_loss"])
  return {"chosen": best["k"], "learning_rate": best["learning_rate"], "run_dir": best["run_dir"]}
