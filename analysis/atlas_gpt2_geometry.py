"""γ and Φ (analysis/update_geometry.py) of each GPT-2 atlas run's update at its kept checkpoints.

G is the gradient of the mean train loss over the atlas's fixed train windows (every
source, ``eval_batches`` batches each: the "full batch" stand-in of a language model),
G̃ the gradient of one of those batches per source, and D the update the run's own
optimizer makes from G̃ in its checkpointed state. Nexus (its update needs one batch per
source and inner steps) and cross-fitted AdamW (it needs per-microbatch gradients) take
more than a gradient, so they are listed as not measured rather than given a D they
would never make. The runs keep a checkpoint every ``geometry_every`` steps
(configs/atlas.py), so the measurement follows training, not only its end.
"""

import json
from pathlib import Path

import jax
import numpy as np

from analysis import update_geometry
from optimizers import factory, microbatch
from training import gpt2
from training import workdir as wd


def measurable(opt_config) -> bool:
  """Whether the optimizer's update is a function of one gradient (see the docstring)."""
  return not factory.nexus_enabled(opt_config) and not microbatch.needs_microbatch_grads(opt_config)


def run_geometry(run_dir: Path, mean_loss, train_batches: dict, compiled=None, step=None) -> dict:
  """{"step", "gamma", "phi", "slope_full", "slope_mini", "curvature"}: floats, at the
  checkpoint ``step`` (None: the newest). ``compiled``: a dict that keeps one jitted
  measurement per model and optimizer config, so an entry's seeds and checkpoints
  compile it once (the compile, not the Hessian-vector product, is most of its time
  on the tiny model)."""
  config = wd.load_config(run_dir)
  vocab_size = json.loads((Path(run_dir) / wd.SUMMARY_FILE).read_text())["vocab_size"]
  step, state, run = gpt2.restored_state(config, Path(run_dir), vocab_size, step)
  if not step:
    raise ValueError(f"{run_dir} has no checkpoint to measure γ and Φ at.")
  first = {s: {k: v[:1] for k, v in b.items()} for s, b in train_batches.items()}
  compiled = {} if compiled is None else compiled
  key = json.dumps([wd.config_json(config.model), wd.config_json(config.optimizer)], sort_keys=True)
  if key not in compiled:
    compiled[key] = jax.jit(
      lambda p, o, full, mini: update_geometry.geometry(mean_loss, run.tx, p, o, full, mini)
    )
  out = compiled[key](state["params"], state["opt_state"], train_batches, first)
  return {"step": int(step), **{k: float(v) for k, v in out.items()}}


def common_steps(dirs) -> list[int]:
  """The checkpoint steps every one of ``dirs`` kept (a seed that stopped early, or
  saved on another interval, keeps the others from being compared at its missing steps)."""
  steps = [set(wd.checkpoint_steps(d)) for d in dirs]
  return sorted(set.intersection(*steps)) if steps else []


def atlas_geometry(names, dirs, valid_N, seeds: int, model_loss, train_batches, n_resamples):
  """{entry: {step: {"gamma", "phi": interval, "undefined_phi", "minibatches"}}} at every
  checkpoint the entry's converged seeds all kept, over those seeds (the report's
  update-geometry table), or {entry: {"not_measured": why}}."""
  out, compiled = {}, {}
  for i, entry in enumerate(names):
    rows = range(i * seeds, (i + 1) * seeds)
    opt_config = wd.load_config(dirs[rows[0]]).optimizer
    if not measurable(opt_config):
      out[entry] = {"not_measured": "its update takes per-source batches or microbatches"}
      continue
    valid = [n for n in rows if valid_N[n]]
    out[entry] = {}
    for step in common_steps([Path(dirs[n]) for n in valid]):
      gamma, phi = np.full(seeds, np.nan), np.full(seeds, np.nan)
      for n in valid:
        g = run_geometry(Path(dirs[n]), model_loss, train_batches, compiled, step)
        gamma[n - rows[0]], phi[n - rows[0]] = g["gamma"], g["phi"]
      out[entry][str(step)] = {
        "gamma": update_geometry.seed_interval(gamma, n_resamples),
        "phi": update_geometry.seed_interval(phi, n_resamples),
        "undefined_phi": int(np.sum(np.isnan(phi) & valid_N[list(rows)])),
        "minibatches": len(valid),
      }
  return out
