r"""The main experiment: are same-optimizer solutions connected, and are AdamW and Muon apart?

    python -m analysis.sweep --config=configs/relu2_sweep.py --workdir=runs/sweep

For every optimizer and width of the sweep config (configs/relu2_sweep.py) it
trains ``seeds`` networks with train.py, run as a subprocess (nothing imports
train.py), into WORKDIR/train/OPT_wWIDTH; a run whose summary.json exists is
skipped, an interrupted one resumes (train.py does that), so rerunning the
command picks up where it stopped. Then, per width, `analysis.connectivity`
measures the barrier between every pair of solutions for each path condition
(linear, aligned linear, fitted curve, aligned fitted curve) into
WORKDIR/connectivity/wWIDTH/CONDITION/, and WORKDIR/sweep.json, WORKDIR/report.md
and WORKDIR/plots/*.png summarize it: barrier vs width per optimizer pair,
the constraint values λ·K*(θ) that show each ball is active, and whether the
two claims held (`analysis.sweep_report`).
"""

import json
import math
import sys
import time
from pathlib import Path

import numpy as np
from absl import logging

from analysis import (
  barriers,
  connectivity,
  connectivity_report,
  experiment_cli,
  run_reader,
  sweep_plots,
  sweep_report,
  train_runs,
)
from configs.common import pack_arg
from training import config_checks, tasks
from training import workdir as wd
from training.errors import UserError

REPO = train_runs.REPO


def weight_decay(config, optimizer: str, width: int, base: float) -> float:
  """λ(m) = base·max(1, m/ref)^power (configs/relu2_sweep.py)."""
  power = config.width_power.get(optimizer, 0.0)
  return float(base * max(1.0, width / config.weight_decay_ref_width) ** power)


def run_dir(workdir: Path, optimizer: str, width: int) -> Path:
  return workdir / "train" / f"{optimizer}_w{width}"


def overrides(config, optimizer: str, width: int) -> dict:
  """{"optimizer.KEY" | "data.KEY": value}: what the sweep sets beyond the variant."""
  out = {}
  for key, value in config.optimizers[optimizer].items():
    if key in ("weight_decay", "adam_weight_decay"):
      value = weight_decay(config, optimizer, width, value)
    out[f"optimizer.{key}"] = value
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
  return [
    sys.executable,
    str(REPO / "train.py"),
    f"--config={REPO / config.train_config}:{variant}",
    f"--workdir={out}",
  ] + [f"--config.{k}={v}" for k, v in overrides(config, optimizer, width).items()]


FIELDS = {
  "seeds": config_checks.positive(),
  "num_steps": config_checks.positive(),
  "seed_chunk_size": config_checks.nonnegative(),
  "parallel": config_checks.positive(),
  "weight_decay_ref_width": config_checks.positive(),
  "points": config_checks.Field(int, lambda v: v >= 2, ">= 2 (the ends of the path)"),
  "num_bends": config_checks.positive(),
  "fit_steps": config_checks.positive(),
  "fit_lr": config_checks.Field(float, lambda v: math.isfinite(v) and v > 0, "finite and > 0"),
  "project": config_checks.Field(bool),
  "barrier_kind": config_checks.one_of(barriers.BARRIER_KINDS),
  "connected_tol": config_checks.nonnegative(float),
  "connectivity_plots": config_checks.one_of(("all", "extremes", "none")),
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
  its conditions and every run's train.py config (a UserError, one line)."""
  config_checks.check_values(wd.flatten(config), FIELDS)
  widths = list(config.widths)
  if not widths or not all(
    isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in widths
  ):
    raise UserError(f"Config field widths={widths!r} must be a non-empty list of ints >= 1.")
  if not config.optimizers:
    raise UserError("Config field optimizers is empty; name at least two optimizers.")
  for condition in config.conditions:
    parse_condition(condition)
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
  if mode not in ("all", "extremes", "none"):
    raise UserError(f"connectivity_plots must be all|extremes|none, got {mode!r}.")
  return mode == "all" or (mode == "extremes" and width in (min(config.widths), max(config.widths)))


def analyze_width(config, workdir: Path, width: int) -> dict:
  """Every condition at one width: {condition: connectivity result (pairs dropped)},
  plus the per-pair barriers of each condition for the best-path summary."""
  runs = run_reader.load_runs([str(run_dir(workdir, o, width)) for o in config.optimizers])
  out = {}
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
    out[condition] = result
    logging.info(
      "Width %4d %-13s %3d pairs in %5.1fs: %s",
      width,
      condition,
      len(result["pairs"]),
      time.time() - start,
      ", ".join(
        f"{g} {s['train_' + config.barrier_kind]['mean']:.2e}" for g, s in result["groups"].items()
      ),
    )
  return out


def summarize_width(config, results: dict) -> dict:
  """Barrier statistics per condition and optimizer pair, plus "best": per pair
  the smallest barrier over the conditions, then the statistics, and
  "best_linear": the same over the straight-line conditions only."""
  kind = config.barrier_kind
  per_condition = {
    c: {
      g: s[f"train_{kind}"] | {"num_pairs": s["num_pairs"], "test": s[f"test_{kind}"]}
      for g, s in r["groups"].items()
    }
    for c, r in results.items()
  }
  any_result = next(iter(results.values()))
  groups = [e["group"] for e in any_result["pairs"]]
  names = list(results)
  heights_CxP = np.array(
    [[e["train_barrier"][kind]["height"] for e in r["pairs"]] for r in results.values()]
  )
  per_condition["best"] = best_over(heights_CxP, names, groups)
  linear = [i for i, c in enumerate(names) if parse_condition(c)[0] == "linear"]
  if linear:
    per_condition["best_linear"] = best_over(
      heights_CxP[linear], [names[i] for i in linear], groups
    )
  return per_condition


def best_over(heights_CxP, names, groups) -> dict:
  """Per group: statistics of the pair-by-pair minimum over the conditions, and
  how often each condition gave it."""
  best_P, argbest_P = heights_CxP.min(axis=0), heights_CxP.argmin(axis=0)
  out = {}
  for g in sorted(set(groups)):
    idx = [p for p, gp in enumerate(groups) if gp == g]
    h = best_P[idx]
    out[g] = {
      "mean": float(h.mean()),
      "std": float(h.std()),
      "min": float(h.min()),
      "max": float(h.max()),
      "num_pairs": len(idx),
      "conditions": {c: int(np.sum(argbest_P[idx] == i)) for i, c in enumerate(names)},
    }
  return out


def run_summaries(config, workdir: Path) -> dict:
  """Per width and optimizer: final losses and the constraint values per leaf."""
  out = {}
  for width in config.widths:
    out[str(width)] = {}
    for optimizer in config.optimizers:
      s = wd.read_summary(run_dir(workdir, optimizer, width))
      cons = {}
      for leaf, c in s["constraints"].items():
        if c["weight_decay"]:
          v = np.asarray(c["lambda_dual_norm"]) / c["bound"]
          cons[leaf] = {
            "k": c["k"],
            "weight_decay": c["weight_decay"],
            "mean": float(v.mean()),
            "min": float(v.min()),
            "max": float(v.max()),
          }
      out[str(width)][optimizer] = {
        "final_train_loss": s["final_train_loss"],
        "final_test_loss": s.get("final_test_loss"),
        "train_loss_per_seed": s["final"]["train_loss"],
        "constraints": cons,
      }
  return out


def zero_predictor_loss(config, workdir: Path) -> float:
  """The train loss of f ≡ 0 on the task the runs were trained on (read from a
  run's config.json, so its input distribution, noise and loss are the ones
  trained; the runs share them, analysis.run_reader.check_compatible): the
  scale barriers are read on."""
  first = run_dir(workdir, next(iter(config.optimizers)), config.widths[0])
  return tasks.zero_predictor_loss(wd.load_config(first))


def run_sweep(config, workdir) -> dict:
  """Trains, analyzes, writes sweep.json, report.md and plots; returns the sweep dict."""
  workdir = Path(workdir).resolve()
  check_config(config, workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  t0 = time.time()
  trained = train_all(config, workdir)
  t_train = time.time() - t0
  logging.info("Training done in %.1fs.", t_train)
  barriers, timings = {}, {"train": t_train}
  for width in config.widths:
    start = time.time()
    barriers[str(width)] = summarize_width(config, analyze_width(config, workdir, width))
    timings[f"analyze_w{width}"] = time.time() - start
  sweep = {
    "config": config.to_dict(),
    "workdir": str(workdir),
    "trained": trained,
    "zero_predictor_loss": zero_predictor_loss(config, workdir),
    "runs": run_summaries(config, workdir),
    "barriers": barriers,
    "barrier_kind": config.barrier_kind,
  }
  sweep["claims"] = sweep_report.evaluate_claims(sweep)
  start = time.time()
  sweep["plots"] = [str(p.relative_to(workdir)) for p in sweep_plots.write_plots(sweep, workdir)]
  timings["report"] = time.time() - start
  timings["total"] = time.time() - t0
  sweep["timings_s"] = timings
  (workdir / "sweep.json").write_text(json.dumps(sweep, indent=1, default=str) + "\n")
  (workdir / "report.md").write_text(sweep_report.render(sweep))
  logging.info(
    "Wrote %s and %s (%.1fs in all).",
    workdir / "report.md",
    workdir / "sweep.json",
    timings["total"],
  )
  for claim in sweep["claims"].values():
    logging.info("%s", claim["verdict"])
  return sweep


if __name__ == "__main__":
  experiment_cli.config_command(
    "analysis.sweep",
    "configs/relu2_sweep.py[:full|runlocal]",
    "Directory of the sweep (created; resumed).",
    run_sweep,
  )
