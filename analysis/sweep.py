r"""The main experiment: are same-optimizer solutions connected, and are AdamW and Muon apart?

    python -m analysis.sweep --config=configs/relu2_sweep.py --workdir=runs/sweep

For every optimizer and width of the sweep config (configs/relu2_sweep.py) it
trains ``seeds`` networks with train.py, run as a subprocess (nothing imports
train.py), into WORKDIR/train/OPT_wWIDTH; a run whose summary.json exists is
skipped, an interrupted one resumes (train.py does that), so rerunning the
command picks up where it stopped. Then, per width: the convergence gate
(`analysis.sweep_endpoints`: unconverged seeds are excluded and counted),
`analysis.connectivity` on every pair of solutions for each path condition
(linear, aligned linear, fitted curves) into WORKDIR/connectivity/wWIDTH/CONDITION/,
every endpoint in every optimizer's ball, function distances, and Muon's
effective radius. The claims are decided on the declared primary condition
with seed-resampled intervals (`analysis.sweep_claims`); WORKDIR/sweep.json,
WORKDIR/report.md and WORKDIR/plots/*.png hold the result
(`analysis.sweep_report`, `analysis.sweep_plots`).
"""

import math
import time
from pathlib import Path

from absl import logging

from analysis import (
  barriers,
  connectivity,
  connectivity_report,
  experiment_cli,
  run_reader,
  stats,
  sweep_claims,
  sweep_endpoints,
  sweep_plots,
  sweep_report,
  train_runs,
)
from configs.common import pack_arg
from training import config_checks, tasks
from training import workdir as wd
from training.errors import UserError

REPO = train_runs.REPO


def weight_decay(config, optimizer: str, key: str, width: int) -> float:
  """λ(m) = base·(m/ref)^power, capped at cap when cap > 0 (configs/relu2_sweep.py)."""
  base, power, cap = (float(v) for v in config.weight_decay[optimizer][key])
  value = base * (width / config.weight_decay_ref_width) ** power
  return float(f"{min(value, cap) if cap > 0 else value:.6g}")


def run_dir(workdir: Path, optimizer: str, width: int) -> Path:
  return workdir / "train" / f"{optimizer}_w{width}"


def overrides(config, optimizer: str, width: int) -> dict:
  """{"optimizer.KEY" | "data.KEY": value}: what the sweep sets beyond the variant."""
  out = {f"optimizer.{k}": v for k, v in config.optimizers[optimizer].items()}
  out.update(
    {
      "optimizer.schedule": config.schedule,
      "optimizer.warmup_steps": int(config.warmup_steps),
      "optimizer.final_lr_fraction": float(config.final_lr_fraction),
    }
  )
  for key in config.weight_decay[optimizer]:
    out[f"optimizer.{key}"] = weight_decay(config, optimizer, key, width)
  out.update({f"data.{key}": value for key, value in config.task.items()})
  return out


def train_command(config, optimizer: str, width: int, out: Path) -> list[str]:
  """The train.py command line of one (optimizer, width) run."""
  variant = pack_arg(
    optimizer=optimizer,
    width=width,
    seeds=config.seeds,
    steps=config.num_steps,
    chunk=config.seed_chunk_size,
  )
  return train_runs.train_py_command(
    config.train_config, variant, out, overrides=overrides(config, optimizer, width)
  )


_fraction = config_checks.Field(float, lambda v: math.isfinite(v) and v > 0, "finite and > 0")
FIELDS = {
  "seeds": config_checks.Field(int, lambda v: v >= 2, "an int ≥ 2 (pairs of seeds)"),
  "num_steps": config_checks.positive(),
  "seed_chunk_size": config_checks.nonnegative(),
  "parallel": config_checks.positive(),
  "warmup_steps": config_checks.nonnegative(),
  "final_lr_fraction": config_checks.nonnegative(float),
  "weight_decay_ref_width": config_checks.positive(),
  "points": config_checks.Field(int, lambda v: v >= 2, ">= 2 (the ends of the path)"),
  "num_bends": config_checks.positive(),
  "fit_steps": config_checks.positive(),
  "fit_lr": _fraction,
  "project": config_checks.Field(bool),
  "barrier_kind": config_checks.one_of(barriers.BARRIER_KINDS),
  "connected_tol": _fraction,
  "converged_fraction": _fraction,
  "active_fraction": _fraction,
  "connectivity_plots": config_checks.one_of(("all", "extremes", "none")),
  "min_pairs": config_checks.positive(),
  "n_resamples": config_checks.Field(int, lambda v: v >= 10, "an int ≥ 10"),
}


def run_commands(config, workdir: Path) -> dict[Path, tuple[list[str], str, int]]:
  """{run dir: (train.py command, optimizer, width)} of every run of the sweep."""
  return {
    run_dir(workdir, o, w): (train_command(config, o, w, run_dir(workdir, o, w)), o, w)
    for w in config.widths
    for o in config.optimizers
  }


def check_config(config, workdir: Path) -> None:
  """Everything the sweep will use, before anything is created: its fields,
  its declared claims and every run's train.py config (a UserError, one line)."""
  config_checks.check_values(wd.flatten(config), FIELDS)
  widths = list(config.widths)
  if not widths or not all(
    isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in widths
  ):
    raise UserError(f"Config field widths={widths!r} must be a non-empty list of ints >= 1.")
  if len(config.optimizers) < 2:
    raise UserError("Config field optimizers needs at least two optimizers (cross pairs).")
  for o in config.optimizers:
    rules = config.weight_decay.get(o)
    if not rules or any(len(r) != 3 or float(r[0]) < 0 for r in rules.values()):
      raise UserError(f"weight_decay.{o} must map each λ key to [base >= 0, power, cap].")
  for condition in config.conditions:
    parse_condition(condition)
  if config.primary_condition not in config.conditions:
    raise UserError(
      f"primary_condition={config.primary_condition!r} is not in conditions "
      f"{list(config.conditions)}; declare one of them."
    )
  for name in ("small_width", "large_width"):
    if config[name] not in widths:
      raise UserError(f"{name}={config[name]} is not one of the widths {widths}.")
  if sorted(config.cross_pair.split("-")) != config.cross_pair.split("-") or not set(
    config.cross_pair.split("-")
  ) <= set(config.optimizers):
    raise UserError(
      f"cross_pair={config.cross_pair!r} must be two sorted optimizer names of the "
      f"sweep joined by '-', e.g. adamw-muon."
    )
  train_runs.check_commands([(d, cmd) for d, (cmd, _, _) in run_commands(config, workdir).items()])


def train_all(config, workdir: Path) -> dict:
  """Trains every (optimizer, width) without a summary.json, ``parallel`` at a
  time (a finished run trained with other settings is refused); returns
  {run name: "skipped" | seconds}. Raises TrainingFailed on a failure."""
  runs = {d: (o, w) for d, (_, o, w) in run_commands(config, workdir).items()}
  expected = {
    d: {
      "optimizer.name": o,
      "model.width": w,
      "num_seeds": config.seeds,
      "num_steps": config.num_steps,
      **overrides(config, o, w),
    }
    for d, (o, w) in runs.items()
  }
  return train_runs.train_runs(
    [(d, train_command(config, o, w, d)) for d, (o, w) in runs.items()], config.parallel, expected
  )


def parse_condition(condition: str) -> tuple[str, bool]:
  """ "bezier+align" -> ("bezier", True)."""
  path, _, flag = condition.partition("+")
  if path not in ("linear", "polychain", "bezier") or flag not in ("", "align"):
    raise UserError(
      f"Unknown condition {condition!r}: PATH[+align], PATH in linear, polychain, bezier."
    )
  return path, flag == "align"


def _plots_for(config, width: int) -> bool:
  mode = config.connectivity_plots
  return mode == "all" or (mode == "extremes" and width in (min(config.widths), max(config.widths)))


def analyze_width(config, workdir: Path, width: int, zero_loss: float) -> tuple[dict, dict]:
  """(endpoints, {condition: {group: S×S barrier table}}) of one width; the
  barrier of a pair with an unconverged end is NaN (excluded)."""
  runs = run_reader.load_runs([str(run_dir(workdir, o, width)) for o in config.optimizers])
  ends, valid_N = sweep_endpoints.endpoints(runs, zero_loss, config)
  tables = {}
  for condition in config.conditions:
    path, align = parse_condition(condition)
    start = time.time()
    result = connectivity.analyze(
      runs,
      path=path,
      points=config.points,
      align=align,
      num_bends=config.num_bends,
      fit_steps=config.fit_steps,
      fit_lr=config.fit_lr,
      project=config.project,
      seed=0,
      with_spectra=_plots_for(config, width),
    )
    connectivity_report.write_outputs(
      result,
      workdir / "connectivity" / f"w{width}" / condition,
      plot=_plots_for(config, width),
      barrier_kind=config.barrier_kind,
    )
    tables[condition] = sweep_endpoints.barrier_tables(result, runs, valid_N, config.barrier_kind)
    logging.info(
      "Width %4d %-13s %3d pairs in %5.1fs (%d of %d endpoints converged).",
      width,
      condition,
      len(result["pairs"]),
      time.time() - start,
      int(valid_N.sum()),
      valid_N.size,
    )
  return ends, tables


def claim_settings(config, zero_loss: float) -> dict:
  """The declared decision rule of analysis.sweep_claims.decide."""
  tol = float(config.connected_tol * zero_loss)
  return {
    "tol": tol,
    "primary_condition": config.primary_condition,
    "small_width": int(config.small_width),
    "large_width": int(config.large_width),
    "cross_pair": config.cross_pair,
    "min_pairs": int(config.min_pairs),
    "n_resamples": int(config.n_resamples),
    "trend_floor": tol / 100,  # Barriers ≪ tol count alike in the slope's log.
  }


def zero_predictor_loss(config, workdir: Path) -> float:
  """The train loss of f ≡ 0 on the task the runs were trained on (read from a
  run's config.json, so its input distribution, noise and loss are the ones
  trained; the runs share them, analysis.run_reader.check_compatible): the
  scale barriers and the convergence gate are read on."""
  first = run_dir(workdir, next(iter(config.optimizers)), config.widths[0])
  return tasks.zero_predictor_loss(wd.load_config(first))


def run_sweep(config, workdir) -> dict:
  """Trains, analyzes, writes sweep.json, report.md and plots; returns the sweep dict."""
  workdir = Path(workdir).resolve()
  check_config(config, workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  t0 = time.time()
  trained = train_all(config, workdir)
  timings = {"train": time.time() - t0}
  logging.info("Training done in %.1fs.", timings["train"])
  zero_loss = zero_predictor_loss(config, workdir)
  endpoints, tables = {}, {}
  for width in config.widths:
    start = time.time()
    endpoints[str(width)], tables[str(width)] = analyze_width(config, workdir, width, zero_loss)
    timings[f"analyze_w{width}"] = time.time() - start
  start = time.time()
  settings = claim_settings(config, zero_loss)
  medians = sweep_claims.SeedMedians(int(config.seeds), int(config.n_resamples))
  records = sweep_claims.decide(tables, list(config.optimizers), settings, medians)
  sweep = {
    "config": config.to_dict(),
    "workdir": str(workdir),
    "trained": trained,
    "zero_predictor_loss": zero_loss,
    "convergence_threshold": float(config.converged_fraction * zero_loss),
    "settings": settings,
    "ns_unit_value": sweep_endpoints.ns_unit_value(),
    "endpoints": endpoints,
    "barriers": sweep_claims.summarize_all(tables, int(config.n_resamples), medians),
    "barrier_tables": {
      w: {c: {g: t.tolist() for g, t in b.items()} for c, b in by.items()}
      for w, by in tables.items()
    },
    "barrier_kind": config.barrier_kind,
    "claims": records,
  }
  sweep["verdicts"] = [stats.describe(r) for r in sweep_claims.headline(records)]
  sweep["plots"] = [str(p.relative_to(workdir)) for p in sweep_plots.write_plots(sweep, workdir)]
  timings["claims_report"] = time.time() - start
  timings["total"] = time.time() - t0
  sweep["timings_s"], sweep["runtime_s"] = timings, timings["total"]
  experiment_cli.write_results(workdir, "sweep.json", sweep, sweep_report.render(sweep))
  return sweep


if __name__ == "__main__":
  experiment_cli.config_command(
    "analysis.sweep",
    "configs/relu2_sweep.py[:full|runlocal]",
    "Directory of the sweep (created; resumed).",
    run_sweep,
  )
