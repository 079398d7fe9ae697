r"""Mode connectivity between trained runs: every pair of solutions, one command.

    python -m analysis.connectivity --runs=runs/adamw,runs/muon --path=bezier \
        --points=65 --align --out=runs/connectivity

Reads train.py workdirs (every seed of each; all runs must share the model and
the task), forms ALL pairs of the N = Σ seeds solutions (seed pairs inside a run
and pairs across runs), and for each pair evaluates the train and test loss
(and accuracy on classification tasks) along the path at ``--points`` values of
t in [0, 1], all pairs in one jitted, vmapped call (`analysis.evaluate`).

- ``--align``: before interpolating, B's hidden units are permuted to match A's
  (weight matching, `analysis.alignment`); the function of B is unchanged.
- ``--path=polychain|bezier``: the bends are first fitted on the train set
  (`analysis.curves.fit_curves`, vmapped over pairs); ``--project`` keeps the
  bends of a same-optimizer pair inside that optimizer's ball {λ·K*(θ) ≤ 1}
  (then the whole curve is inside; cross-optimizer pairs are not projected).

Writes OUT/connectivity.json (one entry per pair: which runs, seeds and
optimizers, path kind, aligned or not, ts, losses along the path, both barriers
(`analysis.barriers`: "mean" = Frankle et al., "linear" = Entezari et al.) with
the t of their maximum, the constraint values λ·K*(θ)/bound of each endpoint's
optimizer at both endpoints and their maximum along the path, and σ_max / stable
rank / effective rank along the path), and PNGs: loss along the paths per
optimizer pair, the barrier matrix grouped by optimizer, the constraint values
and the spectra along the paths.
"""

import functools
import json
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags, logging

from analysis import alignment, constraints, curves, evaluate, experiment_cli, spectra
from analysis.connectivity_report import group_summary, pair_entry, run_entry, write_outputs
from analysis.run_reader import (
  ConnectivityError,
  Run,
  check_compatible,
  load_runs,
  opt_key,
  stack_models,
)
from training import cli, tasks
from training.errors import UserError


@functools.cache
def _constraint_fn(opt_key: str):
  opt_config = json.loads(opt_key)
  return lambda params, batch: constraints.config_constraints(opt_config, params)


def constraint_fn(opt_config):
  """(params, _) -> λ·K*(θ_leaf)/bound per leaf for that optimizer's ball; one
  function object per optimizer config (jitted evaluators take it as static)."""
  return _constraint_fn(opt_key(opt_config))


@functools.cache
def _cached_loss(metric):
  return lambda params, batch: metric(params, batch)["loss"]


def projection_groups(pairs, models, runs, project: bool) -> list[tuple[Any, list[int]]]:
  """[(projection or None, pair indices)]: with ``project``, a same-optimizer
  pair's bends are kept in its run's ball (cross-optimizer pairs share no ball,
  and a ball without a projection is fitted free: None)."""
  if not project:
    return [(None, list(range(len(pairs))))]
  by_run = {}
  for p, (i, j) in enumerate(pairs):
    same = models[i].ball == models[j].ball
    by_run.setdefault(models[i].run if same else None, []).append(p)
  run_by_name = {r.name: r for r in runs}
  groups = []
  for name, idx in by_run.items():
    proj = None
    if name is not None:
      run = run_by_name[name]
      one = jax.tree.map(lambda x: x[0], run.params)
      proj = curves.optimizer_ball_projection(run.config.optimizer, one)
      if proj is None:
        logging.warning("No projection for %s's ball; its curves are fitted unconstrained.", name)
    groups.append((proj, idx))
  return groups


def fit_bends(
  loss_fn, a_P, b_P, train_batch, groups, seed: int, fit_lr: float, **fit_kwargs
) -> tuple[Any, np.ndarray, list]:
  """Bends for every pair (one vmapped `curves.fit_curves` per group of
  `projection_groups`), each pair's final fit loss (the mean over the last
  10% of steps) and whether it was projected."""
  num_pairs = sum(len(idx) for _, idx in groups)
  keys_P = jax.random.split(jax.random.PRNGKey(seed), num_pairs)
  bends, final_loss, projected = [None] * num_pairs, np.zeros(num_pairs), [False] * num_pairs
  for proj, idx in groups:
    take = lambda tree: jax.tree.map(lambda x: jnp.asarray(x)[np.asarray(idx)], tree)
    fit = curves.fit_curves(
      loss_fn,
      take(a_P),
      take(b_P),
      train_batch,
      keys_P[np.asarray(idx)],
      optimizer=optax.adam(fit_lr),
      project=proj,
      **fit_kwargs,
    )
    history = np.asarray(fit.loss_history)
    tail = max(1, history.shape[1] // 10)
    for n, p in enumerate(idx):
      bends[p] = jax.tree.map(lambda x: np.asarray(x[n]), fit.bends)
      final_loss[p] = float(history[n, -tail:].mean())
      projected[p] = proj is not None
  return jax.tree.map(lambda *xs: np.stack(xs), *bends), final_loss, projected


def analyze(
  runs: Sequence[Run],
  path: str = "linear",
  points: int = 33,
  align: bool = False,
  num_bends: int = 1,
  fit_steps: int = 300,
  fit_lr: float = 1e-2,
  project: bool = False,
  batch_size="auto",
  include_self: bool = False,
  seed: int = 0,
  with_spectra: bool = True,
) -> dict:
  """Every pair of the runs' solutions along ``path``: the connectivity.json dict."""
  if path not in ("linear",) + curves.CURVE_KINDS:
    raise ConnectivityError(f"Unknown --path {path!r}; known: linear, polychain, bezier.")
  if points < 2:
    raise ConnectivityError(f"--points must be >= 2 (t = 0 and 1 at least), got {points}.")
  check_compatible(runs)
  t0 = time.time()
  params_N, models = stack_models(runs)
  pairs = evaluate.all_pairs(len(models), include_self)
  if len(pairs) == 0:
    raise ConnectivityError("Only one solution given: no pair to compare (add seeds or runs).")
  ts = np.linspace(0.0, 1.0, points, dtype=np.float32)
  config = runs[0].config
  task = tasks.relu2_task(config)
  a_P, b_P = (
    alignment.align_pairs(params_N, pairs) if align else evaluate.gather_pairs(params_N, pairs)
  )
  t_align = time.time()
  bends_P, fit_loss, projected = None, None, [False] * len(pairs)
  if path != "linear":
    bends_P, fit_loss, projected = fit_bends(
      _cached_loss(task.metric),
      a_P,
      b_P,
      task.train,
      projection_groups(pairs, models, runs, project),
      seed,
      fit_lr,
      kind=path,
      num_bends=num_bends,
      num_steps=fit_steps,
    )
  t_fit = time.time()
  along = evaluate.evaluate_train_test(
    task.metric, path, a_P, b_P, ts, task.train, task.test, bends_P, batch_size=batch_size
  )
  along = jax.tree.map(np.asarray, along)
  opt_by_ball = {m.ball: r.config.optimizer for r in runs for m in models if m.run == r.name}
  cons = {
    ball: jax.tree.map(
      np.asarray,
      evaluate.evaluate_paths(
        constraint_fn(opt), path, a_P, b_P, ts, None, bends_P, batch_size=batch_size
      ),
    )
    for ball, opt in opt_by_ball.items()
  }
  spec_stats = None
  if with_spectra:
    spec_stats = jax.tree.map(
      np.asarray,
      spectra.spectra_along_paths(path, a_P, b_P, jnp.asarray(ts), bends_P, batch_size=8),
    )
  t_eval = time.time()
  result = {
    "path": path,
    "aligned": bool(align),
    "points": points,
    "ts": ts.tolist(),
    "num_bends": num_bends if path != "linear" else 0,
    "fit_steps": fit_steps if path != "linear" else 0,
    "fit_lr": fit_lr,
    "project": bool(project),
    "task": config.data.to_dict(),
    "model": config.model.to_dict(),
    "runs": [run_entry(r) for r in runs],
    "models": [m._asdict() for m in models],
    "pairs": [
      pair_entry(
        p, models[i], models[j], along, cons, spec_stats, ts, fit_loss, projected, path, align
      )
      for p, (i, j) in enumerate(pairs)
    ],
    "timings_s": {"load_align": t_align - t0, "fit": t_fit - t_align, "evaluate": t_eval - t_fit},
  }
  result["groups"] = group_summary(result["pairs"])
  return result


# ---------------------------------------------------------------------------
# Command line.


def define_flags() -> dict[str, flags.FlagHolder]:
  """The command's flags; defined at startup only, so importing this module adds none."""
  return {
    "runs": flags.DEFINE_list(
      "runs",
      None,
      "Comma-separated train.py workdirs (finished runs; "
      "every seed of each is a solution). All must share model and task.",
    ),
    "path": flags.DEFINE_enum(
      "path",
      "linear",
      ["linear", "polychain", "bezier"],
      "Path between two solutions; polychain and bezier have fitted bends.",
    ),
    "points": flags.DEFINE_integer(
      "points", 65, "Evenly spaced values of t in [0, 1] (ends included).", lower_bound=2
    ),
    "align": flags.DEFINE_bool(
      "align",
      False,
      "Permute B's hidden units to match A's (weight matching) before building the path.",
    ),
    "bends": flags.DEFINE_integer(
      "bends", 1, "Bends of a fitted polychain/bezier curve.", lower_bound=1
    ),
    "fit_steps": flags.DEFINE_integer(
      "fit_steps", 300, "Adam steps fitting the bends on the train set.", lower_bound=1
    ),
    "fit_lr": experiment_cli.define_positive_float(
      "fit_lr", 1e-2, "Adam learning rate of the curve fit (> 0)."
    ),
    "project": flags.DEFINE_bool(
      "project",
      False,
      "Keep the bends of same-optimizer pairs inside "
      "that optimizer's ball {λ·K*(θ) ≤ 1} (so the whole curve is).",
    ),
    "batch_size": flags.DEFINE_string(
      "batch_size",
      "auto",
      "Path points per vmapped chunk of the evaluation, or 'auto' (fits a memory budget).",
    ),
    "include_self": flags.DEFINE_bool(
      "include_self", False, "Also pair every solution with itself (a sanity check: zero barrier)."
    ),
    "seed": flags.DEFINE_integer("seed", 0, "PRNG seed of the curve fits.", lower_bound=0),
    "spectra": flags.DEFINE_bool("spectra", True, "Compute singular-value statistics along paths."),
    "plots": flags.DEFINE_bool("plots", True, "Write PNGs beside connectivity.json."),
    "out": flags.DEFINE_string("out", None, "Output directory (connectivity.json and PNGs)."),
  }


def main(f: dict[str, flags.FlagHolder]) -> None:
  if not f["runs"].value or not f["out"].value:
    raise app.UsageError("--runs=DIR[,DIR...] and --out=DIR are required; see --help.")
  out = cli.output_dir(f["out"].value, "--out")  # Checked before the analysis runs.
  batch_size = f["batch_size"].value
  if batch_size != "auto":
    try:
      batch_size = int(batch_size)
    except ValueError:
      batch_size = 0
    if batch_size < 1:
      raise UserError(f"--batch_size={f['batch_size'].value!r} must be an int >= 1 or 'auto'.")
  t0 = time.time()
  runs = load_runs(f["runs"].value)
  num_solutions = sum(len(r.seeds) for r in runs)
  logging.info(
    "Loaded %d runs (%d solutions) in %.1fs.", len(runs), num_solutions, time.time() - t0
  )
  result = analyze(
    runs,
    path=f["path"].value,
    points=f["points"].value,
    align=f["align"].value,
    num_bends=f["bends"].value,
    fit_steps=f["fit_steps"].value,
    fit_lr=f["fit_lr"].value,
    project=f["project"].value,
    batch_size=batch_size,
    include_self=f["include_self"].value,
    seed=f["seed"].value,
    with_spectra=f["spectra"].value,
  )
  written = write_outputs(result, out, f["plots"].value)
  for group, stats in result["groups"].items():
    train = stats["train_linear"]
    logging.info(
      "%-14s %3d pairs  train barrier (linear) mean %.3e max %.3e",
      group,
      stats["num_pairs"],
      train["mean"],
      train["max"],
    )
  logging.info(
    "Wrote %s and %d PNGs (%.1fs in all; %s).",
    written[0],
    len(written) - 1,
    time.time() - t0,
    ", ".join(f"{k} {v:.1f}s" for k, v in result["timings_s"].items()),
  )


if __name__ == "__main__":
  experiment_cli.command("analysis.connectivity", define_flags, main)
