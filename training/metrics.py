"""What a run reports: metrics.jsonl + TensorBoard, rates, and the summary's
implicit-constraint values."""

import json
import time
from pathlib import Path

import jax
import numpy as np

from optimizers import factory, get_k
from training import workdir as wd


def leaf_name(path) -> str:
  """ "hidden/kernel": a pytree path as the analysis names leaves."""
  return jax.tree_util.keystr(path, simple=True, separator="/")


def truncate_jsonl(path: Path, step: int) -> None:
  """Drops the lines past ``step`` (they are redone after a resume) and a torn
  last line (a kill mid-write), so the file matches the checkpoint."""
  if not path.exists():
    return
  kept = []
  for line in path.read_text().splitlines():
    try:
      row = json.loads(line)
    except ValueError:
      continue  # A half-written line: its step is redone.
    if row.get("step", step + 1) <= step:
      kept.append(line)
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text("".join(line + "\n" for line in kept))
  tmp.replace(path)


class MetricWriter:
  """metrics.jsonl (one line per logged step) and TensorBoard scalars."""

  def __init__(self, workdir: Path, resume_step: int):
    from tensorboardX import SummaryWriter  # Not clu: it imports TensorFlow.

    # In a multi-process run every process computes the same (replicated) metrics;
    # process 0 alone writes them (the workdir is shared).
    self.primary = jax.process_index() == 0
    if not self.primary:
      return
    self.path = workdir / wd.METRICS_FILE
    truncate_jsonl(self.path, resume_step)
    self.file = self.path.open("a")
    # purge_step hides the events past the checkpoint, which are logged again.
    self.tb = SummaryWriter(
      str(workdir / wd.TENSORBOARD_DIR), purge_step=resume_step + 1 if resume_step else None
    )

  def write(self, step: int, per_seed: dict[str, np.ndarray], extra: dict) -> dict:
    """One row: each per-seed metric's mean and its values, then ``extra``."""
    row = {"step": step}
    for name, values_S in per_seed.items():
      row[name] = float(np.mean(values_S))
      row[f"{name}_per_seed"] = [float(v) for v in values_S]
    for name, value in extra.items():
      row[name] = value
    if not self.primary:
      return row
    for name, values_S in per_seed.items():
      self.tb.add_scalar(name, row[name], step)
      if len(values_S) > 1:
        self.tb.add_scalar(f"{name}_max_over_seeds", float(np.max(values_S)), step)
    for name, value in extra.items():
      if np.ndim(value) == 0:  # Matrices (lists) go to the JSONL only.
        self.tb.add_scalar(name, value, step)
    self.file.write(json.dumps(row) + "\n")
    self.file.flush()
    return row

  def close(self):
    if self.primary:
      self.file.close()
      self.tb.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


class Rate:
  """Steps per second, timed from the end of the first (compiling) step: per
  report (since the previous one) and over the run, minus excluded time
  (evaluation)."""

  def __init__(self):
    self.t_first = self.t_last = None
    self.first = self.last_step = 0
    self.excluded = 0.0

  def start(self, step: int) -> None:
    """Call once the first step's result is ready."""
    self.t_first = self.t_last = time.perf_counter()
    self.first = self.last_step = step

  def tick(self, step: int) -> float | None:
    """Steps/s since the previous tick; None when no step was timed since."""
    now = time.perf_counter()
    rate = None
    if self.t_last is not None and step > self.last_step:
      rate = (step - self.last_step) / max(now - self.t_last, 1e-9)
    self.t_last, self.last_step = now, step
    return rate

  def exclude(self, seconds: float) -> None:
    self.excluded += seconds

  def total(self, end_step: int) -> float | None:
    """Steps/s over the timed steps (all but the first), or None."""
    if self.t_first is None or end_step <= self.first:
      return None
    seconds = time.perf_counter() - self.t_first - self.excluded
    return (end_step - self.first) / max(seconds, 1e-9)


def learning_rate_schedule(opt_config, num_steps: int):
  """The schedule of the optimizer section (the learning rate it logs)."""
  return factory.make_schedule(
    opt_config.learning_rate,
    num_steps,
    **{
      k: opt_config[k] for k in ("schedule", "warmup_steps", "decay_fraction", "final_lr_fraction")
    },
  )


def constraint_summary(opt_config, params_S) -> dict:
  """λ·K*(θ) per layer for the optimizer's own K, and norms, of every seed."""
  one_seed = jax.tree.map(lambda x: x[0], params_S)
  constraints = factory.implicit_constraints(opt_config, one_seed)
  named = jax.tree_util.tree_flatten_with_path(params_S)[0]
  layers, norms = {}, {}
  for (path, leaf_S), c in zip(named, jax.tree.leaves(constraints)):
    kfn = get_k(c.k, **c.k_options)
    dual_S = np.asarray(jax.vmap(kfn.dual_norm)(leaf_S), np.float64)
    layers[leaf_name(path)] = {
      "k": c.k,
      "dual_norm": dual_S.tolist(),
      "weight_decay": c.weight_decay,
      "lambda_dual_norm": (c.weight_decay * dual_S).tolist(),
      "bound": c.bound,
    }
    flat_SxP = np.asarray(leaf_S, np.float64).reshape(leaf_S.shape[0], -1)
    norms[leaf_name(path)] = {
      "frobenius": np.linalg.norm(flat_SxP, axis=1).tolist(),
      "max_abs": np.abs(flat_SxP).max(axis=1).tolist(),
    }
  return {"constraints": layers, "param_norms": norms}


def optimizer_state_metrics(opt_config, opt_state_S) -> dict[str, list]:
  """{"NAME/leaf": per-seed mean over the leaf's stacked matrices} of the
  optimizer's registered state metrics (MiMuon's Muon-branch fraction); {} for most."""
  out = {}
  for name, fn in factory.OPTIMIZERS[opt_config["name"]].state_metrics.items():
    tree = jax.device_get(fn(opt_state_S))
    for path, value_S in jax.tree_util.tree_flatten_with_path(tree)[0]:
      value_S = np.asarray(value_S, np.float64)
      per_seed = (
        value_S.reshape(value_S.shape[0], -1).mean(axis=1) if value_S.ndim else value_S[None]
      )
      out[f"{name}/{leaf_name(path)}"] = per_seed.tolist()
  return out


def write_summary(workdir: Path, summary: dict) -> None:
  if jax.process_index() == 0:  # the workdir is shared by every process of a run
    wd.write_json_atomic(workdir / wd.SUMMARY_FILE, summary, sort_keys=False)
