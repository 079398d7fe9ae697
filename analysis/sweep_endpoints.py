"""The sweep's endpoints at one width: convergence, balls, function distances.

For the runs of one width (one per optimizer, S seeds each, seed s the same
initialization in every run), in the order of ``runs``: solution (e, s) is row
e·S + s of the stacked params (`analysis.run_reader.stack_models`).

- the convergence gate: a seed converged when its final train loss is at most
  ``fraction`` × the zero predictor's (the atlas's gate); every other number
  of the sweep excludes the rest;
- each run's own constraint values λ·K*(θ)/bound per leaf (from its summary);
- attribution: every endpoint measured in every optimizer's ball at this
  width (`analysis.atlas.ball_of`: the max over leaves of λ_j·K*_j(θ)/bound_j;
  ≤ 1 inside, and for Newton–Schulz Muon compare with its measured radius);
- the function-space distance between every pair on the test inputs
  (`analysis.atlas_maps.function_distances`);
- Muon's effective radius: λ·σ_max(W)/s of its hidden matrix, which Newton–
  Schulz Muon settles below 1 (the quintic maps a lone unit singular value to
  about 0.70), beside the theoretical values.
"""

import jax
import jax.numpy as jnp
import numpy as np

from analysis import atlas, atlas_maps, run_reader, stats, sweep_claims
from optimizers.orthogonalization import orthogonalize
from training import tasks

HIDDEN = "hidden/kernel"  # The relu2 hidden matrix: the leaf every ball binds on.


def converged(runs, zero_loss: float, fraction: float) -> np.ndarray:
  """(E·S,) bool: final train loss ≤ fraction × zero predictor's loss."""
  losses = np.concatenate([np.asarray(r.summary["final"]["train_loss"]) for r in runs])
  return losses <= fraction * zero_loss


def run_rows(runs, valid_N, zero_loss: float) -> dict:
  """{optimizer: per-seed losses (absolute and / zero loss), converged flags,
  and λ·K*/bound per decayed leaf}: the endpoint table of the report."""
  out, S = {}, len(runs[0].seeds)
  for e, r in enumerate(runs):
    s = r.summary
    cons = {
      leaf: {
        "k": c["k"],
        "weight_decay": c["weight_decay"],
        "per_seed": (np.asarray(c["lambda_dual_norm"]) / c["bound"]).tolist(),
      }
      for leaf, c in s["constraints"].items()
      if c["weight_decay"]
    }
    train = np.asarray(s["final"]["train_loss"], dtype=np.float64)
    out[r.config.optimizer.name] = {
      "train_loss": train.tolist(),
      "train_loss_relative": (train / zero_loss).tolist(),
      "test_loss": np.asarray(s["final"]["test_loss"]).tolist(),
      "converged": np.asarray(valid_N[e * S : (e + 1) * S]).tolist(),
      "constraints": cons,
    }
  return out


def membership(runs, params_N, valid_N) -> dict:
  """{"balls": [optimizer j], "per_seed": {optimizer i: [S][J]}, "median": {i: {j: v}}}:
  λ_j·K*_j(θ)/bound_j of every endpoint of i in j's ball (median over i's
  converged seeds)."""
  one = jax.tree.map(lambda x: jnp.asarray(x[0]), params_N)
  names = [r.config.optimizer.name for r in runs]
  fns = [atlas.ball_of(r.config.optimizer, one)[1] for r in runs]
  balls = [n for n, f in zip(names, fns, strict=True) if f is not None]
  values = atlas_maps.ball_values([f for f in fns if f is not None], params_N)
  S = len(runs[0].seeds)
  median = atlas_maps.membership_matrix(values, len(runs), S, valid_N)
  return {
    "balls": balls,
    "per_seed": {n: values[e * S : (e + 1) * S].tolist() for e, n in enumerate(names)},
    "median": {n: dict(zip(balls, median[e].tolist(), strict=True)) for e, n in enumerate(names)},
  }


def function_distance(runs, params_N, valid_N, n_resamples: int) -> dict:
  """{group: summary}: seed median of the RMS output difference on the test
  inputs, with its interval (unconverged ends excluded)."""
  task = tasks.relu2_task(runs[0].config)
  apply = lambda p, x: task.model.apply({"params": p}, x)
  E, S = len(runs), len(runs[0].seeds)
  pairs = atlas_maps.index_pairs(E, S)
  values = atlas_maps.function_distances(apply, params_N, pairs, task.test[0])
  tables = named_tables(atlas_maps.pair_tables(values, pairs, E, S, valid_N), runs)
  return {
    g: sweep_claims.summarize(t, sweep_claims.is_same(g), n_resamples) for g, t in tables.items()
  }


def named_tables(tables_by_index: dict, runs) -> dict:
  """{(e, f): S×S} of atlas_maps.pair_tables → {"adamw-muon": S×S}, the first
  optimizer of the sorted name on the rows."""
  names = [r.config.optimizer.name for r in runs]
  out = {}
  for (e, f), table in tables_by_index.items():
    a, b = names[e], names[f]
    out[sweep_claims.group_name(a, b)] = table if a <= b else table.T
  return out


def barrier_tables(result: dict, runs, valid_N, kind: str) -> dict:
  """{group: S×S train barriers} of one analysis.connectivity result."""
  E, S = len(runs), len(runs[0].seeds)
  pairs = np.array([[p["a"]["index"], p["b"]["index"]] for p in result["pairs"]])
  heights = np.array([p["train_barrier"][kind]["height"] for p in result["pairs"]])
  return named_tables(atlas_maps.pair_tables(heights, pairs, E, S, valid_N), runs)


def ns_unit_value(ns_steps: int = 5) -> float:
  """The singular value the quintic Newton–Schulz gives a lone unit one (≈ 0.70):
  where a rank-1 Muon update puts λ·σ_max/s at equilibrium."""
  x = jnp.outer(jnp.ones(8), jnp.ones(4)) / np.sqrt(32.0)  # σ = 1, rank 1.
  return float(jnp.linalg.norm(orthogonalize(x, "newton_schulz", steps=ns_steps), 2))


def muon_radius(rows: dict, n_resamples: int) -> dict | None:
  """λ·σ_max/s of Muon's hidden matrix over its converged seeds: median with
  its seed interval (the radius it settles at, in units of s/λ)."""
  if "muon" not in rows or HIDDEN not in rows["muon"]["constraints"]:
    return None
  values = np.asarray(rows["muon"]["constraints"][HIDDEN]["per_seed"], np.float64)
  values = np.where(rows["muon"]["converged"], values, np.nan)

  def median(idx):
    v = values[idx]
    v = v[np.isfinite(v)]
    return float(np.median(v)) if v.size else float("nan")

  return stats.bootstrap(median, len(values), n_resamples) | {
    "n_converged": int(np.isfinite(values).sum()),
    "weight_decay": rows["muon"]["constraints"][HIDDEN]["weight_decay"],
  }


def endpoints(runs, zero_loss: float, config) -> tuple[dict, np.ndarray]:
  """Everything the report says about one width's endpoints, and the gate."""
  params_N, _ = run_reader.stack_models(runs)
  valid_N = converged(runs, zero_loss, config.converged_fraction)
  rows = run_rows(runs, valid_N, zero_loss)
  return {
    "runs": rows,
    "membership": membership(runs, params_N, valid_N),
    "function_distance": function_distance(runs, params_N, valid_N, config.n_resamples),
    "muon_radius": muon_radius(rows, config.n_resamples),
  }, valid_N
