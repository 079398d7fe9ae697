"""Alignment γ and descent potential Φ of an optimizer's update (../shared/OPTIMIZERS.md).

At a training state (θ, optimizer state), with G the full-batch gradient, G̃ a
minibatch's, and D the update the optimizer makes from G̃ (`tx.update`, its new
state discarded):

    γ = ⟨G, D⟩ / ⟨G̃, D⟩      the share of the update's descent on the minibatch
                              that carries over to the full batch (1: all of it;
                              below 1: part of D follows the minibatch's noise);
    Φ = ⟨G̃, D⟩² / ⟨D, H D⟩    H the full-batch Hessian, by a Hessian-vector
                              product (forward over reverse mode).

Both are invariant to the scale of D, so optimizers with different step sizes
compare on direction alone. Φ is twice the best decrease of the quadratic model
f(θ + αD) ≈ f + α⟨G̃, D⟩ + α²⟨D, HD⟩/2 over α; it is undefined (NaN) where the
curvature along D is not positive (the model has no minimum along D), and such
minibatches are counted, not dropped silently.

`relu2_states` restores a relu2 run's train state (every seed) at a checkpoint,
`relu2_geometry` measures γ and Φ there for every seed and minibatch in one
jitted, vmapped call.
"""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp

from analysis import stats
from optimizers import factory
from training import checkpoints, relu2, tasks
from training import workdir as wd


def geometry(loss_fn, tx, params, opt_state, full_batch, minibatch) -> dict:
  """{"gamma", "phi", "slope_full" ⟨G, D⟩, "slope_mini" ⟨G̃, D⟩, "curvature" ⟨D, HD⟩}
  for one state and one minibatch; loss_fn(params, batch) -> scalar. Jittable."""
  full_grad = lambda p: jax.grad(loss_fn)(p, full_batch)
  g_full = full_grad(params)
  g_mini = jax.grad(loss_fn)(params, minibatch)
  d, _ = tx.update(g_mini, opt_state, params)
  _, hd = jax.jvp(full_grad, (params,), (d,))
  slope_full = optax.tree.vdot(g_full, d)
  slope_mini = optax.tree.vdot(g_mini, d)
  curvature = optax.tree.vdot(d, hd)
  return {
    "gamma": slope_full / slope_mini,
    "phi": jnp.where(curvature > 0, slope_mini**2 / curvature, jnp.nan),
    "slope_full": slope_full,
    "slope_mini": slope_mini,
    "curvature": curvature,
  }


def minibatch_indices(n_train: int, batch: int, count: int, seed: int) -> np.ndarray:
  """(count, batch) row indices, each row drawn without replacement: the same
  minibatches for every optimizer, so their γ and Φ differ by the update alone."""
  if not 0 < batch <= n_train:
    raise ValueError(f"Minibatch size {batch} must be in [1, n_train={n_train}].")
  rng = np.random.default_rng(seed)
  return np.stack([rng.choice(n_train, batch, replace=False) for _ in range(count)])


def relu2_states(workdir: Path, step: int) -> tuple[object, dict]:
  """(config, the per-seed train state {"params", "opt_state", ...} with a
  leading seed axis) of a relu2 run's checkpoint at ``step``."""
  config = wd.load_config(workdir)
  exp = tasks.relu2_experiment(config)
  tx = factory.make_optimizer(config.optimizer, config.num_steps)
  template = jax.eval_shape(lambda: relu2.init_state(exp, tx, config))
  directory = Path(workdir).resolve() / wd.CHECKPOINT_DIR  # orbax: absolute paths.
  options = ocp.CheckpointManagerOptions(read_only=True)
  with ocp.CheckpointManager(directory, options=options) as mgr:
    state, _ = checkpoints.restore(mgr, template, step)
  return config, state["seeds"]


def relu2_geometry(workdir: Path, step: int, batch: int, count: int, seed: int = 0) -> dict:
  """{key: (S, count) numpy array} of `geometry` for every seed of a relu2 run at
  checkpoint ``step``, over ``count`` shared minibatches of ``batch`` rows."""
  return relu2_geometry_steps(workdir, [step], batch, count, seed)[step]


def relu2_geometry_steps(workdir: Path, steps, batch: int, count: int, seed: int = 0) -> dict:
  """{step: `relu2_geometry` at that checkpoint}: one compiled program for all the steps
  (they share the run's config; compiling once per checkpoint was most of the relu2
  atlas's γ/Φ time)."""
  config = wd.load_config(workdir)
  task = tasks.relu2_task(config)
  tx = factory.make_optimizer(config.optimizer, config.num_steps)
  x, y = task.train
  idx_MxB = jnp.asarray(minibatch_indices(x.shape[0], batch, count, seed))
  loss_fn = lambda p, b: task.metric(p, b)["loss"]

  def one_seed(params, opt_state):
    per_batch = lambda idx: geometry(loss_fn, tx, params, opt_state, (x, y), (x[idx], y[idx]))
    return jax.vmap(per_batch)(idx_MxB)

  all_seeds = jax.jit(jax.vmap(one_seed))
  out = {}
  for step in steps:
    _, seeds = relu2_states(workdir, step)
    out[step] = {
      k: np.asarray(v) for k, v in all_seeds(seeds["params"], seeds["opt_state"]).items()
    }
  return out


def seed_interval(per_seed_S: np.ndarray, n_resamples: int) -> dict:
  """The median over seeds of per-seed values (NaN seeds left out) with its
  seed-resampled interval (analysis.stats.bootstrap)."""
  values = np.asarray(per_seed_S, np.float64)
  statistic = lambda idx: (
    float(np.nanmedian(values[idx])) if np.isfinite(values[idx]).any() else np.nan
  )
  return stats.bootstrap(statistic, len(values), n_resamples=n_resamples)


def atlas_geometry(run_dirs: dict, converged: dict, batch: int, count: int, n_resamples: int):
  """{entry: {step: {"gamma", "phi": interval, "undefined_phi": count}}} at every kept
  checkpoint of each entry's chosen run; per seed the median over the shared
  minibatches, then the median over converged seeds with its interval."""
  out = {}
  for entry, run_dir in run_dirs.items():
    keep = np.asarray(converged[entry], bool)
    out[entry] = {}
    steps = wd.checkpoint_steps(run_dir)
    for step, g in relu2_geometry_steps(Path(run_dir), steps, batch, count).items():
      phi = np.where(keep[:, None], g["phi"], np.nan)
      out[entry][str(step)] = {
        "gamma": seed_interval(np.where(keep, np.median(g["gamma"], axis=1), np.nan), n_resamples),
        "phi": seed_interval(np.array([_finite_median(r) for r in phi]), n_resamples),
        "undefined_phi": int(np.isnan(g["phi"][keep]).sum()),
        "minibatches": int(keep.sum() * count),
      }
  return out


def _finite_median(values) -> float:
  """The median of the finite values; NaN when there is none (no warning)."""
  finite = np.asarray(values, np.float64)[np.isfinite(values)]
  return float(np.median(finite)) if finite.size else float("nan")
