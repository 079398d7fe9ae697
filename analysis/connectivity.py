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

from analysis import alignment, barriers, constraints, curves, evaluate, experiment_cli, spectra
from analysis.connectivity_report import write_outputs, write_plots  # noqa: F401 (the API)
from analysis.run_reader import (  # noqa: F401
  ConnectivityError,
  Model,
  Run,
  ball_labels,
  check_compatible,
  load_run,
  load_runs,
  opt_key,
  stack_models,
)
from optimizers import factory
from training import tasks
from training import workdir as wd

BARRIER_KINDS = barriers.BARRIER_KINDS


@functools.cache
def _constraint_fn(opt_key: str):
  opt_config = json.loads(opt_key)
  return lambda params, batch: constraints.config_constraints(opt_config, params)


def constraint_fn(opt_config):
  """(params, _) -> λ·K*(θ_leaf)/bound per leaf for that optimizer's ball."""
  return _constraint_fn(opt_key(opt_config))


# ---------------------------------------------------------------------------
# The analysis.


def align_pairs(params_N, pairs) -> tuple[Any, Any]:
  """(a_P, b_P) with each b permuted to match its a (weight matching)."""
  one = jax.tree.map(lambda x: x[0], params_N)
  spec = alignment.relu2_permutation_spec(one)
  a_list, b_list = [], []
  for i, j in np.asarray(pairs):
    a, b = wd.seed_params(params_N, int(i)), wd.seed_params(params_N, int(j))
    b_aligned, _ = alignment.align(spec, a, b)
    a_list.append(a)
    b_list.append(jax.tree.map(np.asarray, b_aligned))
  stack = lambda trees: jax.tree.map(lambda *xs: np.stack(xs), *trees)
  return stack(a_list), stack(b_list)


def ball_projection_for(opt_config, params):
  """The projection onto the optimizer's ball, or None if some K has none."""
  cons = jax.tree.leaves(
    factory.implicit_constraints(dict(opt_config), params), is_leaf=lambda c: hasattr(c, "bound")
  )
  if any(c.weight_decay and c.k not in constraints.PROJECTABLE_KS for c in cons):
    return None
  treedef = jax.tree.structure(params)
  ks = jax.tree.unflatten(
    treedef, [c.k if c.k in constraints.PROJECTABLE_KS else "l1" for c in cons]
  )
  lams = jax.tree.unflatten(treedef, [float(c.weight_decay) / float(c.bound) for c in cons])
  return curves.ball_projection(ks, lams)


def fit_bends(
  loss_fn,
  a_P,
  b_P,
  pairs,
  models,
  runs,
  train_batch,
  kind,
  num_bends,
  fit_steps,
  fit_lr,
  project,
  seed,
) -> tuple[Any, np.ndarray, list]:
  """Bends for every pair (vmapped fits, one per projection group), the final
  fit loss per pair, and whether each pair was projected."""
  num_pairs = len(pairs)
  keys_P = jax.random.split(jax.random.PRNGKey(seed), num_pairs)
  groups = {None: list(range(num_pairs))}
  if project:
    groups = {}
    run_by_name = {r.name: r for r in runs}
    for p, (i, j) in enumerate(pairs):
      same = models[i].ball == models[j].ball
      groups.setdefault(models[i].run if same else None, []).append(p)
  bends, final_loss, projected = [None] * num_pairs, np.zeros(num_pairs), [False] * num_pairs
  for run_name, idx in groups.items():
    proj = None
    if run_name is not None:
      run = run_by_name[run_name]
      proj = ball_projection_for(run.config.optimizer, jax.tree.map(lambda x: x[0], run.params))
      if proj is None:
        logging.warning(
          "No projection for %s's ball; its curves are fitted unconstrained.", run_name
        )
    take = lambda tree: jax.tree.map(lambda x: jnp.asarray(x)[np.asarray(idx)], tree)
    fit = curves.fit_curves(
      loss_fn,
      take(a_P),
      take(b_P),
      train_batch,
      keys_P[np.asarray(idx)],
      kind=kind,
      num_bends=num_bends,
      num_steps=fit_steps,
      optimizer=optax.adam(fit_lr),
      project=proj,
    )
    history = np.asarray(fit.loss_history)
    tail = max(1, fit_steps // 10)
    for n, p in enumerate(idx):
      bends[p] = jax.tree.map(lambda x: np.asarray(x[n]), fit.bends)
      final_loss[p] = float(history[n, -tail:].mean())
      projected[p] = proj is not None
  bends_P = jax.tree.map(lambda *xs: np.stack(xs), *bends)
  return bends_P, final_loss, projected


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
  train_batch, test_batch, metric = task.train, task.test, task.metric
  a_P, b_P = align_pairs(params_N, pairs) if align else evaluate.gather_pairs(params_N, pairs)
  t_align = time.time()
  bends_P, fit_loss, projected = None, None, [False] * len(pairs)
  if path != "linear":
    bends_P, fit_loss, projected = fit_bends(
      _cached_loss(metric),
      a_P,
      b_P,
      pairs,
      models,
      runs,
      train_batch,
      path,
      num_bends,
      fit_steps,
      fit_lr,
      project,
      seed,
    )
  t_fit = time.time()
  along = evaluate.evaluate_train_test(
    metric, path, a_P, b_P, ts, train_batch, test_batch, bends_P, batch_size=batch_size
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
  spec_stats = (
    jax.tree.map(
      np.asarray,
      spectra.spectra_along_paths(path, a_P, b_P, jnp.asarray(ts), bends_P, batch_size=8),
    )
    if with_spectra
    else None
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
    "runs": [_run_entry(r) for r in runs],
    "models": [m._asdict() for m in models],
    "pairs": [
      _pair_entry(p, i, j, models, along, cons, spec_stats, ts, fit_loss, projected, path, align)
      for p, (i, j) in enumerate(pairs)
    ],
    "timings_s": {"load_align": t_align - t0, "fit": t_fit - t_align, "evaluate": t_eval - t_fit},
  }
  result["groups"] = group_summary(result["pairs"])
  return result


@functools.cache
def _cached_loss(metric):
  return lambda params, batch: metric(params, batch)["loss"]


def _run_entry(run: Run) -> dict:
  return {
    "name": run.name,
    "workdir": run.workdir,
    "optimizer": run.config.optimizer.name,
    "learning_rate": run.config.optimizer.learning_rate,
    "weight_decay": run.config.optimizer.weight_decay,
    "seeds": run.seeds,
    "num_steps": run.config.num_steps,
    "final": run.summary.get("final", {}),
  }


def pair_group(opt_a: str, opt_b: str) -> str:
  """ "adamw-muon": the two optimizers' names, sorted."""
  return "-".join(sorted((opt_a, opt_b)))


def _pair_entry(
  p, i, j, models, along, cons, spec_stats, ts, fit_loss, projected, path, align
) -> dict:
  a, b = models[i], models[j]
  entry = {
    "a": {"index": a.index, "run": a.run, "seed": a.seed, "optimizer": a.optimizer},
    "b": {"index": b.index, "run": b.run, "seed": b.seed, "optimizer": b.optimizer},
    "kind": "intra-run" if a.run == b.run else "inter-run",
    "same_optimizer": a.ball == b.ball,
    "group": pair_group(a.ball, b.ball),
    "path": path,
    "aligned": bool(align),
  }
  for split in ("train", "test"):
    entry[f"{split}_loss"] = along[split]["loss"][p].tolist()
    if "accuracy" in along[split]:
      entry[f"{split}_accuracy"] = along[split]["accuracy"][p].tolist()
    found = barriers.loss_barriers(along[split]["loss"][p], ts)
    entry[f"{split}_barrier"] = {
      k: {"height": float(v.height), "t": float(v.t_max)} for k, v in found.items()
    }
  entry["constraints"] = {}
  for ball in dict.fromkeys((a.ball, b.ball)):
    named = alignment.leaf_arrays(cons[ball])
    per_leaf = {name: v[p] for name, v in named.items()}  # (T,) each.
    max_T = np.max(np.stack(list(per_leaf.values())), axis=0)
    entry["constraints"][ball] = {
      "at_a": {n: float(v[0]) for n, v in per_leaf.items()},
      "at_b": {n: float(v[-1]) for n, v in per_leaf.items()},
      "max_along": {n: float(v.max()) for n, v in per_leaf.items()},
      "max_leaf_along": max_T.tolist(),
    }
  if spec_stats is not None:
    entry["spectra"] = {
      leaf: {s: v[p].tolist() for s, v in stats.items()} for leaf, stats in spec_stats.items()
    }
  if fit_loss is not None:
    entry["fit"] = {"final_curve_loss": float(fit_loss[p]), "projected": bool(projected[p])}
  return entry


def group_summary(pair_entries: Sequence[dict]) -> dict:
  """Per optimizer pair: the number of pairs and mean/min/max of each barrier."""
  out = {}
  for group in sorted({e["group"] for e in pair_entries}):
    rows = [e for e in pair_entries if e["group"] == group]
    out[group] = {"num_pairs": len(rows)}
    for split in ("train", "test"):
      for kind in BARRIER_KINDS:
        h = np.array([e[f"{split}_barrier"][kind]["height"] for e in rows])
        out[group][f"{split}_{kind}"] = {
          "mean": float(h.mean()),
          "std": float(h.std()),
          "min": float(h.min()),
          "max": float(h.max()),
        }
  return out


# ---------------------------------------------------------------------------
# Command line.


def define_flags() -> None:
  """The CLI's flags; defined at startup only, so importing this module adds none."""
  global _RUNS, _PATH, _POINTS, _ALIGN, _BENDS, _FIT_STEPS, _FIT_LR, _PROJECT
  global _BATCH_SIZE, _SELF, _SEED, _SPECTRA, _PLOTS, _OUT
  _RUNS = flags.DEFINE_list(
    "runs",
    None,
    "Comma-separated train.py workdirs (finished runs; "
    "every seed of each is a solution). All must share model and task.",
  )
  _PATH = flags.DEFINE_enum(
    "path",
    "linear",
    ["linear", "polychain", "bezier"],
    "Path between two solutions; polychain and bezier have fitted bends.",
  )
  _POINTS = flags.DEFINE_integer(
    "points", 65, "Evenly spaced values of t in [0, 1] (ends included)."
  )
  _ALIGN = flags.DEFINE_bool(
    "align",
    False,
    "Permute B's hidden units to match A's (weight matching) before building the path.",
  )
  _BENDS = flags.DEFINE_integer("bends", 1, "Bends of a fitted polychain/bezier curve.")
  _FIT_STEPS = flags.DEFINE_integer(
    "fit_steps", 300, "Adam steps fitting the bends on the train set."
  )
  _FIT_LR = flags.DEFINE_float("fit_lr", 1e-2, "Adam learning rate of the curve fit.")
  _PROJECT = flags.DEFINE_bool(
    "project",
    False,
    "Keep the bends of same-optimizer pairs inside "
    "that optimizer's ball {λ·K*(θ) ≤ 1} (so the whole curve is).",
  )
  _BATCH_SIZE = flags.DEFINE_string(
    "batch_size",
    "auto",
    "Path points per vmapped chunk of the evaluation, or 'auto' (fits a memory budget).",
  )
  _SELF = flags.DEFINE_bool(
    "include_self", False, "Also pair every solution with itself (a sanity check: zero barrier)."
  )
  _SEED = flags.DEFINE_integer("seed", 0, "PRNG seed of the curve fits.")
  _SPECTRA = flags.DEFINE_bool("spectra", True, "Compute singular-value statistics along paths.")
  _PLOTS = flags.DEFINE_bool("plots", True, "Write PNGs beside connectivity.json.")
  _OUT = flags.DEFINE_string("out", None, "Output directory (connectivity.json and PNGs).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments {argv[1:]}; see --help.")
  if not _RUNS.value or not _OUT.value:
    raise app.UsageError("--runs=DIR[,DIR...] and --out=DIR are required; see --help.")
  logging.get_absl_logger().addFilter(experiment_cli.quiet_orbax)
  batch_size = _BATCH_SIZE.value
  if batch_size != "auto":
    try:
      batch_size = int(batch_size)
    except ValueError:
      raise app.UsageError(f"--batch_size must be an int or 'auto', got {batch_size!r}.") from None
  try:
    t0 = time.time()
    runs = load_runs(_RUNS.value)
    logging.info(
      "Loaded %d runs (%d solutions) in %.1fs.",
      len(runs),
      sum(len(r.seeds) for r in runs),
      time.time() - t0,
    )
    result = analyze(
      runs,
      _PATH.value,
      _POINTS.value,
      _ALIGN.value,
      _BENDS.value,
      _FIT_STEPS.value,
      _FIT_LR.value,
      _PROJECT.value,
      batch_size,
      _SELF.value,
      _SEED.value,
      _SPECTRA.value,
    )
  except ConnectivityError as e:
    raise SystemExit(f"analysis.connectivity: {e}") from None
  written = write_outputs(result, _OUT.value, _PLOTS.value)
  for group, stats in result["groups"].items():
    logging.info(
      "%-14s %3d pairs  train barrier (linear) mean %.3e max %.3e",
      group,
      stats["num_pairs"],
      stats["train_linear"]["mean"],
      stats["train_linear"]["max"],
    )
  logging.info(
    "Wrote %s and %d PNGs (%.1fs in all; %s).",
    written[0],
    len(written) - 1,
    time.time() - t0,
    ", ".join(f"{k} {v:.1f}s" for k, v in result["timings_s"].items()),
  )


if __name__ == "__main__":
  define_flags()
  app.run(main)
