"""The GPT-2 atlas's runs: train.py workdirs of configs/gpt2.py, the
learning-rate grid at seed 0, the choice on held-out validation loss, then the
chosen rate at the other seeds.

Run WORKDIR/train/ENTRY_lrK_sS is entry ENTRY at grid point K and seed S (one
seed per workdir: GPT-2 runs do not vmap seeds). A run with a summary.json is
reused after its config.json is checked against what the atlas asks
(`train_runs.check_finished_run`); an interrupted one resumes. A run that stops
on a non-finite state (a too-large learning rate) is a result, not an error:
it gets a diverged.json, is never chosen, and is not retrained on a rerun.

Selection reads the run's summary: the mean over sources of the final
validation loss (train.py's fixed validation batches, never the train loss).
A run "converged" when that loss is finite and below converged_fraction ×
ln(vocab), the uniform predictor's loss.
"""

import json
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from analysis import atlas_runs, train_runs
from configs.common import OPTIMIZER_DEFAULTS, pack_arg
from configs.gpt2 import _GPT2_LR
from training import workdir as wd
from training.errors import UserError

NEXUS_PREFIX = "nexus_"
DIVERGED_FILE = "diverged.json"
entry_names = atlas_runs.entry_names


def parse_optimizer(name: str) -> tuple[str, bool]:
  """ "nexus_muon" -> ("muon", True): Nexus around muon; "adamw" -> ("adamw", False)."""
  if name.startswith(NEXUS_PREFIX):
    return name[len(NEXUS_PREFIX) :], True
  return name, False


def base_learning_rate(config, entry: str) -> float:
  """configs/gpt2.py's learning rate of the entry's (base) optimizer, or its override."""
  e = config.entries[entry]
  base, _ = parse_optimizer(e.optimizer)
  return float(wd.flatten(e.overrides).get("optimizer.learning_rate", _GPT2_LR[base]))


def learning_rates(config, entry: str, extended: tuple[int, int] = (0, 0)) -> dict[int, float]:
  """{k: learning rate}: `atlas_runs.grid_multipliers` × the entry's base rate."""
  base = base_learning_rate(config, entry)
  return {
    k: float(f"{base * m:.6g}") for k, m in atlas_runs.grid_multipliers(config, extended).items()
  }


def run_dir(workdir: Path, entry: str, k: int, seed: int) -> Path:
  return Path(workdir) / "train" / f"{entry}_lr{k}_s{seed}"


def checkpointing(config) -> dict:
  """Every run keeps a checkpoint each ``geometry_every`` steps, all of them (the final
  step is always saved), so γ and Φ can be measured along training."""
  every = int(config.geometry_every)
  return {"checkpoint_every": every, "keep_checkpoints": -(-int(config.num_steps) // every)}


def _overrides(config, entry: str) -> dict:
  """{"a.b": value}: the entry's train.py overrides beyond the variant (the rate is the
  grid's), and the atlas's checkpointing."""
  flat = wd.flatten(config.entries[entry].overrides)
  return {k: v for k, v in flat.items() if k != "optimizer.learning_rate"} | checkpointing(config)


def train_command(config, entry: str, lr: float, seed: int, out: Path) -> list[str]:
  base, nexus = parse_optimizer(config.entries[entry].optimizer)
  variant = pack_arg(
    size=config.size,
    optimizer=base,
    lr=lr,
    steps=config.num_steps,
    batch=config.batch,
    seq_len=config.seq_len,
    similarity=config.similarity_every,
  )
  if nexus:
    variant += "," + pack_arg(inner_lr=config.inner_learning_rate, inner_steps=config.inner_steps)
    variant += ",nexus"
  variant += ",runlocal" if config.runlocal else ""
  return train_runs.train_py_command(
    config.train_config, variant, out, [f"--config.seed={seed}"], _overrides(config, entry)
  )


def expected_fields(config, entry: str, lr: float, seed: int) -> dict:
  """The config.json fields a finished run must have to be reused."""
  base, nexus = parse_optimizer(config.entries[entry].optimizer)
  out = {
    "seed": seed,
    "num_steps": int(config.num_steps),
    "batch_size": int(config.batch),
    "data.seq_len": int(config.seq_len),
    "model.size": config.size,
    "optimizer.name": base,
    "optimizer.learning_rate": lr,
    "optimizer.nexus.enabled": nexus,
    **_overrides(config, entry),
  }
  if nexus:
    out["optimizer.nexus.inner_learning_rate"] = float(config.inner_learning_rate)
    out["optimizer.nexus.inner_steps"] = int(config.inner_steps)
  return out


def check_entries(config) -> None:
  for entry in entry_names(config):
    base, _ = parse_optimizer(config.entries[entry].optimizer)
    if base not in OPTIMIZER_DEFAULTS or base not in _GPT2_LR:
      raise UserError(
        f"Atlas entry {entry!r}: optimizer {config.entries[entry].optimizer!r} has no GPT-2 "
        f"learning rate; known: {', '.join(sorted(_GPT2_LR))} (or nexus_ + one of them)."
      )


def grid_commands(config, workdir: Path, extended: dict | None = None) -> dict:
  """{(entry, k): (run dir, command, learning rate, expected)} of the seed-0 grid
  (with ``extended``'s extra points: `atlas_runs.extend_grid`)."""
  check_entries(config)
  out = {}
  for entry in entry_names(config):
    for k, lr in learning_rates(config, entry, (extended or {}).get(entry, (0, 0))).items():
      d = run_dir(workdir, entry, k, 0)
      out[(entry, k)] = (
        d,
        train_command(config, entry, lr, 0, d),
        lr,
        expected_fields(config, entry, lr, 0),
      )
  return out


def seed_commands(config, workdir: Path, selection: dict) -> dict:
  """{(entry, seed): (...)} of the chosen rate at seeds 1..seeds−1 (seed 0 is the grid's)."""
  out = {}
  for entry, item in selection.items():
    if item["chosen"] is None:
      continue
    k, lr = item["chosen"], item["learning_rate"]
    for s in range(1, int(config.seeds)):
      d = run_dir(workdir, entry, k, s)
      out[(entry, s)] = (
        d,
        train_command(config, entry, lr, s, d),
        lr,
        expected_fields(config, entry, lr, s),
      )
  return out


def launch(commands: list, parallel: int) -> dict:
  """Trains every (dir, command, _, expected), ``parallel`` at a time; returns
  {run name: "skipped" | "diverged" | seconds}. A failure other than a
  non-finite stop raises TrainingFailed once the other runs are done (they
  stay reusable)."""

  def one(item):
    d, cmd, _, expected = item
    if (d / DIVERGED_FILE).exists():
      train_runs.check_finished_run(d, expected, cmd)
      return d.name, "diverged"
    try:
      return d.name, train_runs.train_runs([(d, cmd)], 1, {d: expected})[d.name]
    except train_runs.TrainingFailed as e:
      if "Training stopped:" not in str(e):  # training.checkpoints.raise_if_nonfinite
        return d.name, e
      (d / DIVERGED_FILE).write_text(json.dumps({"error": str(e)}))
      return d.name, "diverged"

  with ThreadPoolExecutor(max(1, int(parallel))) as pool:
    done = dict(pool.map(one, commands))
  failed = [e for e in done.values() if isinstance(e, Exception)]
  if failed:
    raise failed[0]
  return done


def read_run(d: Path) -> dict:
  """{"status", "validation_loss", "ood_loss", "vocab_size"} of a run dir (NaN when diverged)."""
  if (d / DIVERGED_FILE).exists():
    return {"status": "diverged", "validation_loss": math.nan, "ood_loss": math.nan}
  s = wd.read_summary(d)
  ood = s.get("final_ood_loss") or {}
  return {
    "status": s["status"],
    "validation_loss": float(s["final_val_loss_mean"]),
    "ood_loss": float(ood.get("mean", math.nan)),
    "vocab_size": int(s["vocab_size"]),
  }


def is_converged(config, run: dict, vocab_size: int) -> bool:
  v = run["validation_loss"]
  return math.isfinite(v) and v <= config.converged_fraction * math.log(vocab_size)


def select(config, workdir: Path, vocab_size: int, extended: dict | None = None) -> dict:
  """{entry: {"chosen": k | None, "learning_rate", "run_dir", "sweep": [point, ...]}}
  as `atlas_runs.select`'s, from the seed-0 grid (one seed per point)."""
  out = {}
  for (entry, k), (d, _, lr, _) in grid_commands(config, workdir, extended).items():
    run = read_run(d)
    converged = is_converged(config, run, vocab_size)
    point = {
      "k": k,
      "learning_rate": lr,
      "run_dir": str(d),
      "status": run["status"],
      "converged": [converged],
      "validation_loss": [run["validation_loss"]],
      "ood_loss": [run["ood_loss"]],
      "median_validation_loss": run["validation_loss"] if converged else math.nan,
    }
    out.setdefault(entry, {"sweep": []})["sweep"].append(point)
  for item in out.values():
    item["sweep"].sort(key=lambda p: p["learning_rate"])
    item.update(atlas_runs.choose(item["sweep"]))
  return out


def train_all(config, workdir: Path) -> tuple[dict, dict, dict]:
  """(what was trained, the grid extensions, the selection): the seed-0 grid grown
  where the choice sits at its edge (`atlas_runs.extend_grid`), then the other seeds
  at the chosen rate."""
  vocab = None

  def train(extended):
    nonlocal vocab
    done = launch(list(grid_commands(config, workdir, extended).values()), config.parallel)
    vocab = vocab or vocab_size(config, workdir)
    return done

  trained, extended, selection = atlas_runs.extend_grid(
    config, train, lambda ext: select(config, workdir, vocab, ext)
  )
  trained |= launch(list(seed_commands(config, workdir, selection).values()), config.parallel)
  return trained, extended, selection


def vocab_size(config, workdir: Path) -> int:
  """The tokenizer's vocabulary, from the first finished grid run's summary."""
  for d, *_ in grid_commands(config, workdir).values():
    if (d / wd.SUMMARY_FILE).exists():
      return int(wd.read_summary(d)["vocab_size"])
  raise UserError(f"No grid run under {Path(workdir) / 'train'} finished: every one diverged.")
