r"""The optimizer atlas: where every optimizer's solutions land, side by side.

    python -m analysis.atlas --config=configs/atlas.py --workdir=runs/atlas

Trains every entry of the config (an optimizer at a setting) over a small
learning-rate grid with the same budget (`analysis.atlas_runs`; finished runs
are reused on a rerun), chooses each entry's learning rate on held-out
inputs, and maps the chosen solutions (`analysis.atlas_maps`):

- the E×E matrix of aligned barriers (train loss, linear barrier after weight
  matching; same-entry on the diagonal), with seed-resampled intervals, and
  the regions it clusters into (entries whose excess barrier is ≈ 0);
- ball membership: the matrix λ_j·K*_j(θ_i)/bound_j (entry i's solutions
  measured in entry j's ball; ≤ 1 inside), for every entry j whose implicit
  bias is a ball or a penalty (`optimizers.implicit_bias`);
- spectra of every matrix (σ_max, stable rank, effective rank, σ histogram)
  and a clustering by them; function-space distances on the test inputs;
- the hypothesis test: does the ball distance max(λ_j·K*_j(θ_i), λ_i·K*_i(θ_j))
  predict the cross barrier across the Lion-K-type members (entries with a
  ball)? Spearman ρ with a seed-resampled interval and a verdict (held when
  the interval is above 0), and the same between members and non-members.

Writes WORKDIR/atlas.json (every number), WORKDIR/report.md and PNGs
(`analysis.atlas_report`).
"""

import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from analysis import (
  atlas_maps,
  atlas_report,
  atlas_runs,
  experiment_cli,
  spectra,
  stats,
  update_geometry,
)
from optimizers import get_k, implicit_constraints
from training import config_checks, perf, tasks
from training import workdir as wd
from training.errors import UserError

FIELDS = {
  "width": config_checks.Field(int, lambda v: v >= 1, "an int ≥ 1"),
  "seeds": config_checks.Field(int, lambda v: v >= 2, "an int ≥ 2 (pairs of seeds)"),
  "num_steps": config_checks.Field(int, lambda v: v >= 1, "an int ≥ 1"),
  "parallel": config_checks.Field(int, lambda v: v >= 1, "an int ≥ 1"),
  "points": config_checks.Field(int, lambda v: v >= 2, "an int ≥ 2 (t = 0 and 1)"),
  "n_resamples": config_checks.Field(int, lambda v: v >= 10, "an int ≥ 10"),
  "min_pairs": config_checks.Field(int, lambda v: v >= 1, "an int ≥ 1"),
  "converged_fraction": config_checks.Field(float, lambda v: v > 0, "a float > 0"),
  "connected_tol": config_checks.Field(float, lambda v: v > 0, "a float > 0"),
  "weight_decay": config_checks.Field(float, lambda v: v >= 0, "a float ≥ 0"),
  "geometry_batch": config_checks.Field(int, lambda v: v >= 1, "an int ≥ 1 (≤ task.n_train)"),
  "geometry_minibatches": config_checks.Field(int, lambda v: v >= 1, "an int ≥ 1"),
}


def check_config(config, workdir: Path) -> None:
  """Every field and every run's train.py config, before anything is created."""
  if config.get("model") == "gpt2":
    from analysis import atlas_gpt2  # here: atlas_gpt2 imports this module

    return atlas_gpt2.check_config(config, workdir)
  config_checks.check_values(wd.flatten(config), FIELDS)
  if not config.entries:
    raise UserError("The atlas config has no entries: add --config.entries or use the default.")
  atlas_runs.check_grid(config)
  if config.geometry_batch > config.task.n_train:
    raise UserError(
      f"geometry_batch={config.geometry_batch} is more than task.n_train="
      f"{config.task.n_train} rows; set --config.geometry_batch to at most that."
    )
  commands = atlas_runs.run_commands(config, workdir)
  atlas_runs.train_runs.check_commands([(d, cmd) for d, cmd, _ in commands.values()])


def ball_of(opt_config, params) -> tuple[str, object | None]:
  """(kind, fn): the entry's implicit-bias kind on its matrices ("ball" |
  "penalty" | "none", the weakest over its matrix leaves: a Muon-routed
  optimizer's ℓ∞ ball on its AdamW-side leaves does not make it a member) and fn(params) -> max over every leaf
  with a ball or penalty and λ > 0 of λ·K*(θ)/bound (None for kind "none")."""
  is_constraint = lambda c: hasattr(c, "kind")
  cons = implicit_constraints(opt_config, params)
  flat = zip(jax.tree.leaves(cons, is_leaf=is_constraint), jax.tree.leaves(params), strict=True)
  kinds = {c.kind for c, x in flat if c.weight_decay > 0 and np.ndim(x) >= 2}
  # The weakest kind over the matrices: one matrix without a known ball (Freon
  # q < 1's hidden layer beside its AdamW-side head) makes the entry a non-member.
  kind = "none" if "none" in kinds or not kinds else "penalty" if "penalty" in kinds else "ball"
  if kind == "none":
    return kind, None

  def fn(p):
    values = jax.tree.map(
      lambda c, x: (
        (c.weight_decay / c.bound) * get_k(c.k, **c.k_options).dual_norm(x).astype(jnp.float32)
        if c.kind in ("ball", "penalty") and c.weight_decay > 0
        else jnp.float32(0.0)
      ),
      cons,
      p,
      is_leaf=is_constraint,
    )
    return jnp.max(jnp.stack(jax.tree.leaves(values)))

  return kind, fn


def hypothesis_tests(
  names, kinds, tables, values, ball_index, S, boot, min_pairs, level_N=None, **extra
) -> dict:
  """{"members", "contrast"}: verdict records of Spearman ρ(ball distance, cross
  barrier) over the pairs of entries whose kind is "ball" (the Lion-K-type
  members), and over the member × non-member pairs; with ``level_N`` (each solution's
  final loss on the barrier's split) also "members_given_level" and "contrast_given_level",
  the partial ρ given the pair's training level (secondary: a barrier that tracks how far
  its endpoints trained is not evidence for the balls); ``extra`` goes into each record."""
  E = len(names)
  members = [i for i in range(E) if kinds[i] == "ball"]
  others = [i for i in range(E) if i not in members]
  member_pairs = [(i, j) for i, j in zip(*np.triu_indices(E, 1)) if i in members and j in members]
  contrast_pairs = [tuple(sorted((i, j))) for i in members for j in others]
  hypothesis = {}
  tests = [
    ("members", member_pairs, "Ball distance predicts the cross barrier (Lion-K-type members)"),
    ("contrast", contrast_pairs, "Ball distance predicts the cross barrier (member vs non-member)"),
  ]
  if level_N is not None:
    tests += [
      (f"{key}_given_level", pairs, f"{claim[:-1]}, given the endpoints' training level)")
      for key, pairs, claim in tests
    ]
  for key, pair_set, claim in tests:
    pair_set = [(int(i), int(j)) for i, j in pair_set]
    # An entry pair without one converged cross pair, or without a ball value, drops out.
    excluded = [
      p
      for p in pair_set
      if not np.isfinite(tables[p]).any() or (ball_index[p[0]] is None and ball_index[p[1]] is None)
    ]
    interval = atlas_maps.ball_distance_correlation(
      tables,
      values,
      ball_index,
      pair_set,
      S,
      level_N if key.endswith("_given_level") else None,
      **boot,
    )
    hypothesis[key] = stats.verdict_record(
      claim,
      interval,
      0.0,
      "greater",
      n_seeds=S,
      n_pairs_used=len(pair_set) - len(excluded),
      n_pairs_excluded=len(excluded),
      min_pairs=min_pairs,
      entry_pairs=[[names[i], names[j]] for i, j in pair_set],
      **extra,
    )
  return hypothesis


def analyze(config, workdir: Path, selection: dict) -> dict:
  """Every map and verdict of the chosen runs (``selection``: `atlas_runs.train_all`'s)."""
  commands = atlas_runs.run_commands(config, workdir)
  first = wd.load_config(next(iter(commands.values()))[0])
  zero_loss = tasks.zero_predictor_loss(first)
  names = [e for e in atlas_runs.entry_names(config) if selection[e]["chosen"] is not None]
  dropped = [e for e in atlas_runs.entry_names(config) if selection[e]["chosen"] is None]
  if len(names) < 2:
    raise UserError(
      f"Only {len(names)} atlas entries have a converged seed at any learning rate "
      f"(none for: {', '.join(dropped)}); train longer (--config.num_steps) or widen the grid."
    )
  E, S = len(names), int(config.seeds)
  runs = {e: wd.load_params(Path(selection[e]["run_dir"])) for e in names}
  task = tasks.relu2_task(runs[names[0]][0])
  params_N = atlas_maps.stack_params([runs[e][1] for e in names])
  point = {e: atlas_runs.chosen_point(selection[e]) for e in names}
  valid_N = np.concatenate([np.asarray(point[e]["converged"], bool) for e in names])
  pairs = atlas_maps.index_pairs(E, S)
  ts = np.linspace(0.0, 1.0, int(config.points), dtype=np.float32)
  boot = dict(n_resamples=int(config.n_resamples))

  t0 = time.time()
  heights = atlas_maps.aligned_barriers(task.metric, params_N, pairs, ts, task.train)
  t_barriers = time.time() - t0
  # One path point is one train-loss evaluation; its rate against the plain f32 matmul
  # measured now, on this machine (the weight matching is in the time).
  one_loss = jax.jit(lambda p, batch: task.metric(p, batch)["loss"])
  point_flops = perf.compiled_flops(one_loss, jax.tree.map(lambda x: x[0], params_N), task.train)
  matmul = perf.matmul_rate(repeats=5)
  tables = atlas_maps.pair_tables(heights, pairs, E, S, valid_N)
  barrier = atlas_maps.matrix_with_intervals(tables, E, S, **boot)
  tol = float(config.connected_tol * zero_loss)
  excess = atlas_maps.excess_barrier(barrier["median"])
  region, tree = atlas_maps.regions(excess, tol)

  _, test = atlas_runs.split_test(task)
  apply = lambda p, x: task.model.apply({"params": p}, x)
  fdist = atlas_maps.function_distances(apply, params_N, pairs, test[0])
  fd = atlas_maps.matrix_with_intervals(atlas_maps.pair_tables(fdist, pairs, E, S, valid_N), E, S)

  features, feature_names = atlas_maps.spectrum_features(params_N, valid_N)
  spec_region, spec_tree, spec_dist = atlas_maps.spectral_regions(features, E, S)
  sigmas = {k: np.asarray(v) for k, v in jax.vmap(spectra.singular_values)(params_N).items()}

  opt_configs = {e: runs[e][0].optimizer for e in names}
  one = jax.tree.map(lambda x: x[0], params_N)
  balls = {e: ball_of(opt_configs[e], one) for e in names}
  with_ball = [e for e in names if balls[e][1] is not None]
  values = atlas_maps.ball_values([balls[e][1] for e in with_ball], params_N)
  membership = atlas_maps.membership_matrix(values, E, S, valid_N)
  ball_index = [with_ball.index(e) if e in with_ball else None for e in names]

  hypothesis = hypothesis_tests(
    names,
    [balls[e][0] for e in names],
    tables,
    values,
    ball_index,
    S,
    boot,
    min_pairs=max(3, int(config.min_pairs)),
    level_N=np.where(
      valid_N,
      np.concatenate([np.asarray(point[e]["train_loss"], np.float64) for e in names]),
      np.nan,
    ),
    condition="linear+align, train loss; Spearman over entry pairs",
    width=int(config.width),
  )

  t0 = time.time()
  geometry = update_geometry.atlas_geometry(
    {e: selection[e]["run_dir"] for e in names},
    {e: point[e]["converged"] for e in names},
    int(config.geometry_batch),
    int(config.geometry_minibatches),
    int(config.n_resamples),
  )
  t_geometry = time.time() - t0

  return {
    "config": config.to_dict(),
    "zero_predictor_loss": zero_loss,
    "connected_tolerance": tol,
    "convergence_threshold": float(config.converged_fraction * zero_loss),
    "entries": names,
    "dropped_entries": dropped,
    "selection": selection,
    "optimizers": {e: config.entries[e].optimizer for e in names},
    "implicit_bias": {e: balls[e][0] for e in names},
    "final": {
      e: {
        s: float(np.median(np.asarray(point[e][f"{s}_loss"])[np.asarray(point[e]["converged"])]))
        for s in ("train", "validation", "test")
      }
      for e in names
    },
    "barrier": atlas_maps.to_lists(barrier),
    "excess_barrier": excess.tolist(),
    "regions": region,
    "region_tree": np.asarray(tree).tolist(),
    "function_distance": atlas_maps.to_lists(fd),
    "spectra": {
      "feature_names": feature_names,
      "features": features.tolist(),
      "regions": spec_region,
      "tree": np.asarray(spec_tree).tolist(),
      "distance": spec_dist.tolist(),
      "singular_values": {k: v.tolist() for k, v in sigmas.items()},
    },
    "ball_entries": with_ball,
    "membership": membership.tolist(),
    "hypothesis": hypothesis,
    "update_geometry": geometry,
    "timings_s": {
      "update_geometry": t_geometry,
      **atlas_maps.barrier_timings(t_barriers, len(pairs) * len(ts), point_flops, matmul),
    },
  }


def run(config, workdir) -> dict:
  if config.get("model") == "gpt2":  # configs/atlas.py:gpt2: the GPT-2 atlas
    from analysis import atlas_gpt2  # here: atlas_gpt2 imports this module

    return atlas_gpt2.run(config, workdir)
  t = time.time()
  workdir = Path(workdir).resolve()
  check_config(config, workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  trained, extended, selection = atlas_runs.train_all(config, workdir)
  result = analyze(config, workdir, selection)
  result["trained"], result["grid_extensions"] = trained, extended
  plots = atlas_report.write_plots(result, workdir)
  result["runtime_s"] = time.time() - t
  result["verdicts"] = [stats.describe(r) for r in result["hypothesis"].values()]
  experiment_cli.write_results(workdir, "atlas.json", result, atlas_report.render(result, plots))
  return result


if __name__ == "__main__":
  experiment_cli.config_command(
    "analysis.atlas",
    "configs/atlas.py[:VARIANT]",
    "Output directory (training runs go in WORKDIR/train; report.md, atlas.json and PNGs beside).",
    run,
  )
