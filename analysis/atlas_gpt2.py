r"""The optimizer atlas on GPT-2: every optimizer's solutions on the tiny GPT-2
and the built-in prose + code + math mixture, side by side.

    python -m analysis.atlas --config=configs/atlas.py:gpt2 --workdir=runs/atlas_gpt2

The relu2 atlas (`analysis.atlas`) with GPT-2 runs (`analysis.atlas_gpt2_runs`:
one train.py workdir per entry, learning rate and seed; the grid at seed 0,
chosen on validation loss, then the chosen rate at the other seeds), mapped by
the same `analysis.atlas_maps` and written by the same `analysis.atlas_report`:

- final train loss (fixed train windows), validation loss and OOD loss;
- the E×E aligned barrier matrix: b weight-matched onto a
  (`analysis.gpt2_alignment`), then the linear (Entezari) barrier of the mean
  validation loss over sources along the straight path, at ``points`` values
  of t (validation loss: GPT-2's train and validation windows are one
  distribution, and the validation batches are the fixed ones every run saw);
  seed-resampled intervals; regions by average linkage on the excess barrier;
- ball membership λ_j·K*_j(θ_i)/bound_j (`analysis.atlas.ball_of`), spectra
  of every matrix and regions by them, function distances (the symmetrized KL
  of the next-token distributions on the validation windows, mean per token);
- the sources' K×K gradient-cosine matrix per entry (train.py's summary: on the
  validation batches at the final step; median over seeds);
- the hypothesis test of `analysis.atlas.hypothesis_tests`.
"""

import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import scipy.special
from absl import logging

from analysis import (
  atlas,
  atlas_gpt2_geometry,
  atlas_gpt2_runs,
  atlas_maps,
  atlas_report,
  atlas_runs,
  barriers,
  experiment_cli,
  gpt2_alignment,
  gpt2_spectra,
  run_reader,
  spectra,
  stats,
)
from training import config_checks, perf, tasks
from training import workdir as wd
from training.errors import UserError

FIELDS = {
  "seeds": config_checks.Field(int, lambda v: v >= 2, "an int ≥ 2 (pairs of seeds)"),
  "num_steps": config_checks.positive(),
  "batch": config_checks.Field(int, lambda v: v >= 3 and v % 3 == 0, "a multiple of 3 (sources)"),
  "seq_len": config_checks.positive(),
  "parallel": config_checks.positive(),
  "similarity_every": config_checks.nonnegative(),
  "geometry_every": config_checks.positive(),
  "points": config_checks.Field(int, lambda v: v >= 2, "an int ≥ 2 (t = 0 and 1)"),
  "eval_batches": config_checks.positive(),
  "eval_batch_size": config_checks.positive(),
  "n_resamples": config_checks.Field(int, lambda v: v >= 10, "an int ≥ 10"),
  "min_pairs": config_checks.positive(),
  "converged_fraction": config_checks.Field(float, lambda v: v > 0, "a float > 0"),
  "connected_tol": config_checks.Field(float, lambda v: v > 0, "a float > 0"),
}
CROSS_PAIRS = ("same_seed", "all")


def check_config(config, workdir: Path) -> None:
  """Every field and every run's train.py config, before anything is created."""
  config_checks.check_values(wd.flatten(config), FIELDS)
  if not config.entries:
    raise UserError("The atlas config has no entries: add --config.entries or use the default.")
  atlas_runs.check_grid(config)
  if config.cross_pairs not in CROSS_PAIRS:
    raise UserError(f"cross_pairs={config.cross_pairs!r}: one of {', '.join(CROSS_PAIRS)}.")
  if config.geometry_every > config.num_steps:
    raise UserError(
      f"geometry_every={config.geometry_every} is more than num_steps={config.num_steps}: "
      "set --config.geometry_every to at most num_steps (γ and Φ are measured at every "
      "checkpoint the runs keep, one each geometry_every steps)."
    )
  grid = atlas_gpt2_runs.grid_commands(config, workdir)
  # The grid, and one other-seed run per entry (the same flags but the seed).
  other = {}
  if int(config.seeds) > 1:
    fake = {e: {"chosen": 0, "learning_rate": grid[(e, 0)][2]} for e in config.entries}
    other = atlas_gpt2_runs.seed_commands(config, workdir, fake)
  commands = [(d, cmd) for d, cmd, *_ in list(grid.values()) + list(other.values())]
  atlas_gpt2_runs.train_runs.check_commands(commands)


def cross_pair_indices(num_entries: int, num_seeds: int, mode: str) -> np.ndarray:
  """(P, 2) solution pairs i < j (solution e·S + s): every same-entry seed pair,
  and across entries every seed pair ("all") or seed s with seed s ("same_seed":
  one init and data order, S pairs per entry pair instead of S²)."""
  pairs = atlas_maps.index_pairs(num_entries, num_seeds)
  if mode == "all":
    return pairs
  (e, s), (f, t) = np.divmod(pairs[:, 0], num_seeds), np.divmod(pairs[:, 1], num_seeds)
  return pairs[(e == f) | (s == t)]


def symmetric_kl(logits_NxMxV, pairs_Px2) -> np.ndarray:
  """(P,) ½(KL(p_a‖p_b) + KL(p_b‖p_a)) of the next-token distributions, mean over
  the M token positions: a function distance (permutation invariant)."""
  logp = scipy.special.log_softmax(np.asarray(logits_NxMxV, np.float64), axis=-1)
  out = []
  for i, j in np.asarray(pairs_Px2):
    d = logp[i] - logp[j]
    out.append(0.5 * np.mean(np.sum((np.exp(logp[i]) - np.exp(logp[j])) * d, -1)))
  return np.asarray(out)


def _plain(tree):
  return {k: _plain(v) for k, v in tree.items()} if hasattr(tree, "items") else np.asarray(tree)


def mean_loss_fn(model):
  """(params, {source: batches}) -> the mean over sources of the mean loss."""
  loss = tasks.stacked_loss(model)
  return jax.jit(lambda p, data: jnp.mean(jnp.stack([loss(p, b) for b in data.values()])))


def aligned_barriers(model, params, pairs_Px2, ts, val, valid_N) -> np.ndarray:
  """(P,) linear barriers of the mean validation loss along each pair's straight
  path, b weight-matched onto a (NaN, not computed, for a pair with an invalid
  solution); one jitted path evaluation (the T points by lax.map) for every pair."""
  path_losses = gpt2_spectra.make_path_losses(model, ts)
  out = []
  for i, j in np.asarray(pairs_Px2):
    if not (valid_N[i] and valid_N[j]):
      out.append(float("nan"))
      continue
    b = _plain(gpt2_alignment.align_gpt2(params[i], params[j], model.config.n_head)[0])
    losses = path_losses(params[i], b, val)
    out.append(float(barriers.loss_barrier(losses[None], ts, kind="linear").height[0]))
  return np.asarray(out)


def analyze(config, workdir: Path, selection: dict) -> dict:
  names = [e for e in atlas_gpt2_runs.entry_names(config) if selection[e]["chosen"] is not None]
  dropped = [e for e in atlas_gpt2_runs.entry_names(config) if selection[e]["chosen"] is None]
  if len(names) < 2:
    raise UserError(
      f"Only {len(names)} atlas entries have a converged run at any learning rate "
      f"(none for: {', '.join(dropped)}); train longer (--config.num_steps) or widen the grid."
    )
  E, S = len(names), int(config.seeds)
  dirs = [
    atlas_gpt2_runs.run_dir(workdir, e, selection[e]["chosen"], s) for e in names for s in range(S)
  ]
  runs = [atlas_gpt2_runs.read_run(d) for d in dirs]
  vocab = atlas_gpt2_runs.vocab_size(config, workdir)
  valid_N = np.array([atlas_gpt2_runs.is_converged(config, r, vocab) for r in runs])
  model, _ = run_reader.model_for(Path(selection[names[0]]["run_dir"]))
  # A diverged run has no final params: its row is the entry's seed-0 params, masked by valid_N.
  params = [
    _plain(wd.seed_params(wd.load_params(d if v else dirs[i - i % S])[1], 0))
    for i, (d, v) in enumerate(zip(dirs, valid_N, strict=True))
  ]
  params_N = jax.tree.map(lambda *xs: jnp.stack(xs), *params)
  first = Path(selection[names[0]]["run_dir"])
  batches = {
    split: run_reader.text_batches(first, split, config.eval_batch_size, config.eval_batches)
    for split in ("train", "validation")
  }
  mean_loss = mean_loss_fn(model)
  train_N = np.array([float(mean_loss(p, batches["train"])) for p in params])
  ts = np.linspace(0.0, 1.0, int(config.points), dtype=np.float32)
  boot = dict(n_resamples=int(config.n_resamples))

  pairs = cross_pair_indices(E, S, config.cross_pairs)
  t0 = time.time()
  heights = aligned_barriers(model, params, pairs, ts, batches["validation"], valid_N)
  t_barriers = time.time() - t0
  logging.info("Barriers: %d pairs × %d points in %.1f s.", len(pairs), len(ts), t_barriers)
  # One path point is one evaluation of the mean validation loss; its rate against the
  # plain f32 matmul measured now, on this machine (the weight matching is in the time).
  point_flops = perf.compiled_flops(mean_loss, params[0], batches["validation"])
  matmul = perf.matmul_rate(repeats=5)
  tables = atlas_maps.pair_tables(heights, pairs, E, S, valid_N)
  barrier = atlas_maps.matrix_with_intervals(tables, E, S, **boot)
  tol = float(config.connected_tol)
  excess = atlas_maps.excess_barrier(barrier["median"])
  region, tree = atlas_maps.regions(excess, tol)

  inputs = np.concatenate([b["inputs"][0] for b in batches["validation"].values()])
  apply = jax.jit(lambda p: model.apply({"params": p}, inputs, deterministic=True))
  logits = np.stack([np.asarray(apply(p)).reshape(-1, vocab) for p in params])
  all_pairs = atlas_maps.index_pairs(E, S)
  fdist = symmetric_kl(logits, all_pairs)
  fd = atlas_maps.matrix_with_intervals(
    atlas_maps.pair_tables(fdist, all_pairs, E, S, valid_N), E, S
  )

  features, feature_names = atlas_maps.spectrum_features(params_N, valid_N)
  spec_region, spec_tree, spec_dist = atlas_maps.spectral_regions(features, E, S)
  sigmas = {k: np.asarray(v) for k, v in jax.vmap(spectra.singular_values)(params_N).items()}

  opt_configs = {e: wd.load_config(selection[e]["run_dir"]).optimizer for e in names}
  balls = {e: atlas.ball_of(opt_configs[e], params[0]) for e in names}
  with_ball = [e for e in names if balls[e][1] is not None]
  values = (
    atlas_maps.ball_values([balls[e][1] for e in with_ball], params_N)
    if with_ball
    else np.zeros((E * S, 0))
  )
  membership = atlas_maps.membership_matrix(values, E, S, valid_N)
  ball_index = [with_ball.index(e) if e in with_ball else None for e in names]
  hypothesis = atlas.hypothesis_tests(
    names,
    [balls[e][0] for e in names],
    tables,
    values,
    ball_index,
    S,
    boot,
    min_pairs=max(3, int(config.min_pairs)),
    level_N=np.where(valid_N, [float(mean_loss(p, batches["validation"])) for p in params], np.nan),
    condition=f"linear+align, validation loss; cross pairs {config.cross_pairs}; "
    "Spearman over entry pairs",
    width=None,
  )
  t0 = time.time()
  geometry = atlas_gpt2_geometry.atlas_geometry(
    names, dirs, valid_N, S, mean_loss, batches["train"], int(config.n_resamples)
  )
  t_geometry = time.time() - t0
  final = {
    "train": seed_medians(train_N, names, valid_N),
    "validation": seed_medians([r["validation_loss"] for r in runs], names, valid_N),
    "ood": seed_medians([r["ood_loss"] for r in runs], names, valid_N),
  }
  return {
    "config": config.to_dict(),
    "model": "gpt2",
    "barrier_loss": "validation",
    "uniform_loss": float(np.log(vocab)),
    "connected_tolerance": tol,
    "convergence_threshold": float(config.converged_fraction * np.log(vocab)),
    "entries": names,
    "dropped_entries": dropped,
    "selection": selection,
    "runs": {e: [str(d) for d in dirs[i * S : (i + 1) * S]] for i, e in enumerate(names)},
    "valid": {e: valid_N[i * S : (i + 1) * S].tolist() for i, e in enumerate(names)},
    "optimizers": {e: config.entries[e].optimizer for e in names},
    "implicit_bias": {e: balls[e][0] for e in names},
    "final": {e: {k: final[k][e] for k in final} for e in names},
    "barrier": atlas_maps.to_lists(barrier),
    "excess_barrier": excess.tolist(),
    "regions": region,
    "region_tree": np.asarray(tree).tolist(),
    "function_distance": atlas_maps.to_lists(fd),
    "function_distance_kind": "symmetrized KL per token (validation windows)",
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
    "grad_cosine": grad_cosines(names, dirs, valid_N, S),
    "update_geometry": geometry,
    "geometry_minibatch": (
      f"one train batch of {config.eval_batch_size} windows per source (G: the "
      f"{config.eval_batches} fixed train batches per source)"
    ),
    "timings_s": {
      "update_geometry": t_geometry,
      **atlas_maps.barrier_timings(t_barriers, len(pairs) * len(ts), point_flops, matmul),
    },
  }


def seed_medians(values_N, names, valid_N) -> dict:
  """{entry: the median of its valid seeds' values (NaN if none)}."""
  v = np.asarray(values_N, np.float64).reshape(len(names), -1)
  ok = np.asarray(valid_N, bool).reshape(len(names), -1)
  return {
    e: float(np.median(v[i][ok[i]])) if ok[i].any() else float("nan") for i, e in enumerate(names)
  }


def grad_cosines(names, dirs, valid_N, S) -> dict:
  """{entry: {"matrix": K×K median over valid seeds, "mean_pairwise"}} of the
  summaries' final sources' gradient cosines (absent when similarity_every = 0)."""
  out = {}
  for i, e in enumerate(names):
    mats = [
      np.asarray(s["final_grad_cosine"])
      for d, v in zip(dirs[i * S : (i + 1) * S], valid_N[i * S : (i + 1) * S], strict=True)
      if v and "final_grad_cosine" in (s := wd.read_summary(d))
    ]
    if mats:
      m = np.median(np.stack(mats), axis=0)
      off = m[~np.eye(len(m), dtype=bool)]
      out[e] = {"matrix": m.tolist(), "mean_pairwise": float(off.mean()), "n_seeds": len(mats)}
  return out


def run(config, workdir) -> dict:
  t = time.time()
  workdir = Path(workdir).resolve()
  check_config(config, workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  trained, extended, selection = atlas_gpt2_runs.train_all(config, workdir)
  t_train = time.time() - t
  result = analyze(config, workdir, selection)
  result["trained"], result["grid_extensions"] = trained, extended
  result["sources"] = wd.load_config(selection[result["entries"][0]]["run_dir"]).data.sources
  plots = atlas_report.write_plots(result, workdir)
  result["runtime_s"], result["train_s"] = time.time() - t, t_train
  result["verdicts"] = [stats.describe(r) for r in result["hypothesis"].values()]
  experiment_cli.write_results(workdir, "atlas.json", result, atlas_report.render(result, plots))
  return result
