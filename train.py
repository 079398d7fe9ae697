r"""Trains a model from an ml_collections config into a workdir; resumes it if it exists.

    python train.py --config=configs/relu2.py:optimizer=muon,width=512 \
        --workdir=runs/muon512 --config.seed=3

--config=FILE[:VARIANT]  a config file's get_config(VARIANT); see its docstring.
--config.a.b=V           overrides one field (unknown fields and wrong types fail).
--workdir=DIR            the run: config.json, checkpoints/, metrics.jsonl,
                         tensorboard/, summary.json (format: analysis/workdir.py).
--override_config        resume DIR even though its config differs.

config.num_seeds = S trains S independent networks (seeds seed, ..., seed+S−1)
in one jitted, vmapped step. Rerunning the same command after a crash or a
preemption (SIGTERM saves a checkpoint and exits 0) resumes from the latest
checkpoint and ends bitwise identical to an uninterrupted run. The
model/task-specific part is an `Experiment` (see EXPERIMENTS).

GPT-2 (configs/gpt2.py) has its own loop, `train_gpt2`: a host-side grain
iterator over a mixture of text sources (its state is checkpointed beside the
train state), the batch sharded over a "data" mesh axis of all devices,
gradient accumulation inside the step, per-source validation loss every
config.eval_every steps, tokens/s and MFU in the metrics; one seed per workdir.
With optimizer.nexus.enabled the iterator yields one batch per source per step
(data.text_pipeline.per_source_loader) and the step hands Nexus a
grad_fn(params, source) over that (K, B/K, T) batch. Every config.similarity_every
steps the K×K cosine matrix of the sources' gradients on fixed validation
batches goes into metrics.jsonl (analysis.source_geometry).
"""

import contextlib
import dataclasses
import json
import re
import logging as pylogging
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple

from absl import app, flags, logging
import jax
import jax.numpy as jnp
import ml_collections
from ml_collections import config_flags
import numpy as np
import optax
import orbax.checkpoint as ocp

from analysis import source_geometry
from analysis import workdir as wd
from data import batching, synthetic, text_pipeline, text_sources, tokenizers
from models import gpt2, relu2
from optimizers import factory, get_k

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config: configs/FILE.py[:VARIANT], e.g. "
    "configs/relu2.py:optimizer=muon,width=512. Override fields with --config.a.b=V.",
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Directory of the run (created; resumed if it has checkpoints).")
_OVERRIDE = flags.DEFINE_bool(
    "override_config", False, "Resume a workdir even if its saved config differs.")


class ConfigError(ValueError):
  """A config that cannot run; the message is one line naming field and fix."""


class NonFiniteError(RuntimeError):
  """The loss or the parameters became NaN/inf."""


# ---------------------------------------------------------------------------
# The model/task-specific part: everything else in this file is generic.

class Experiment(NamedTuple):
  """What the trainer needs from a model and its data, all for one seed.

  init_params(key) -> params;  loss_fn(params, batch, rng) -> (loss, aux dict);
  get_batch(data_key, step) -> batch, jittable (the data order is a function
  of the seed's data key and the step, so it is resumable and vmappable);
  evaluate(params) -> dict of scalars, jittable; iterator_state(step) -> JSON
  dict checkpointed beside the train state (and checked on restore).
  """
  init_params: Callable[[jax.Array], Any]
  loss_fn: Callable[[Any, Any, jax.Array], tuple[jax.Array, dict]]
  get_batch: Callable[[jax.Array, jax.Array], Any]
  evaluate: Callable[[Any], dict]
  iterator_state: Callable[[int], dict]


def relu2_experiment(config) -> Experiment:
  m, d = config.model, config.data
  model = relu2.make_model(m.width, m.out_dim, m.use_bias, m.parametrization,
                           m.bias_init_std)
  data = synthetic.make_task(d.task, d.input_dim, d.n_train, d.n_test, d.teacher_width,
                             d.input_dist, d.label_noise, d.seed)
  loss = synthetic.get_loss(d.loss)
  x_NxD, y_NxO = jnp.asarray(data.x_train_NxD), jnp.asarray(data.y_train_NxO)
  x_TxD, y_TxO = jnp.asarray(data.x_test_TxD), jnp.asarray(data.y_test_TxO)
  n, batch_size = x_NxD.shape[0], config.batch_size
  classification = d.task in synthetic.CLASSIFICATION_TASKS

  def loss_fn(params, batch, rng):
    del rng  # Deterministic model; the RNG is for models with dropout.
    x_BxD, y_BxO = batch
    return loss(model.apply({"params": params}, x_BxD), y_BxO), {}

  def get_batch(data_key, step):
    if batching.is_full_batch(n, batch_size):
      return x_NxD, y_NxO
    idx_B = batching.batch_indices(data_key, step, n, batch_size)
    return x_NxD[idx_B], y_NxO[idx_B]

  def evaluate(params):
    out = {}
    for split, x, y in (("train", x_NxD, y_NxO), ("test", x_TxD, y_TxO)):
      if x.shape[0] == 0:
        continue
      pred = model.apply({"params": params}, x)
      out[f"{split}_loss"] = loss(pred, y)
      if classification:
        out[f"{split}_accuracy"] = synthetic.sign_accuracy(pred, y)
    return out

  return Experiment(
      init_params=lambda key: model.init(key, x_NxD[:1])["params"],
      loss_fn=loss_fn, get_batch=get_batch, evaluate=evaluate,
      iterator_state=lambda step: batching.iterator_state(step, n, batch_size))


EXPERIMENTS: dict[str, Callable[[Any], Experiment]] = {"relu2": relu2_experiment}
# Models with their own loop (a host-side data iterator and a device mesh):
# see "GPT-2" below.
LOOPS = ("gpt2",)


# ---------------------------------------------------------------------------
# Config checks: before anything is built or compiled.

# field -> (type, check, what a valid value is). int fields reject bool.
_POSITIVE = (lambda v: v >= 1, ">= 1")
_NONNEG = (lambda v: v >= 0, ">= 0")
_ANY = (lambda v: True, "")
_FIELDS = {
    "seed": (int, *_NONNEG), "num_seeds": (int, *_POSITIVE),
    "num_steps": (int, *_POSITIVE), "batch_size": (int, *_NONNEG),
    "log_every": (int, *_POSITIVE), "checkpoint_every": (int, *_POSITIVE),
    "keep_checkpoints": (int, *_POSITIVE),
    "optimizer.learning_rate": (float, lambda v: v > 0, "> 0"),
    "optimizer.weight_decay": (float, *_NONNEG),
}
_RELU2_FIELDS = {
    "seed_chunk_size": (int, *_NONNEG),
    "model.name": (str, *_ANY), "model.width": (int, *_POSITIVE),
    "model.out_dim": (int, *_POSITIVE), "model.use_bias": (bool, *_ANY),
    "model.parametrization": (str, lambda v: v in relu2.PARAMETRIZATIONS,
                              f"one of {relu2.PARAMETRIZATIONS}"),
    "model.bias_init_std": (float, *_NONNEG),
    "data.task": (str, lambda v: v in synthetic.TASKS, f"one of {synthetic.TASKS}"),
    "data.loss": (str, lambda v: v in synthetic.LOSSES, f"one of {synthetic.LOSSES}"),
    "data.input_dim": (int, *_POSITIVE), "data.n_train": (int, *_POSITIVE),
    "data.n_test": (int, *_NONNEG), "data.teacher_width": (int, *_POSITIVE),
    "data.input_dist": (str, lambda v: v in synthetic.INPUT_DISTS,
                        f"one of {synthetic.INPUT_DISTS}"),
    "data.label_noise": (float, *_NONNEG), "data.seed": (int, *_NONNEG),
}


def _plus_list(text: str) -> list[str]:
  """"a+b+c" -> ["a", "b", "c"] (the list syntax of config strings)."""
  return [x.strip() for x in text.split("+") if x.strip()]


def _weights_ok(text: str) -> bool:
  try:
    return all(float(w) > 0 for w in _plus_list(text))
  except ValueError:
    return False


_GPT2_FIELDS = {
    "model.name": (str, *_ANY),
    "model.size": (str, lambda v: v in gpt2.CONFIGS, f"one of {sorted(gpt2.CONFIGS)}"),
    "model.dropout": (float, lambda v: 0 <= v < 1, "in [0, 1)"),
    "model.dtype": (str, lambda v: v in ("float32", "bfloat16"), "float32 or bfloat16"),
    "model.remat": (bool, *_ANY),
    "grad_accum_steps": (int, *_POSITIVE), "eval_every": (int, *_POSITIVE),
    "similarity_every": (int, *_NONNEG),
    "eval_batches": (int, *_POSITIVE), "eval_batch_size": (int, *_POSITIVE),
    "peak_flops": (float, *_ANY),
    "data.sources": (str, lambda v: bool(_plus_list(v)) and all(
        s in text_sources.SOURCES for s in _plus_list(v)),
                     f"'+'-separated names of {text_sources.SOURCES}"),
    "data.weights": (str, _weights_ok, "empty (uniform) or '+'-separated positive numbers"),
    "data.ood_sources": (str, lambda v: all(s in text_sources.OOD_SOURCES
                                            for s in _plus_list(v)),
                         f"empty or '+'-separated names of {text_sources.OOD_SOURCES}"),
    "data.tokenizer": (str, lambda v: v in ("bytes", "bpe"), "bytes or bpe"),
    "data.bpe_vocab_size": (int, lambda v: v > 256, "> 256"),
    "data.seq_len": (int, *_POSITIVE), "data.max_chars": (int, *_NONNEG),
}


def check_gpt2_config(config) -> None:
  """The GPT-2 checks that relate several fields."""
  if config.num_seeds != 1:
    raise ConfigError(f"num_seeds={config.num_seeds}: a GPT-2 run trains one seed per "
                      "workdir; set num_seeds=1 and run other seeds as separate workdirs "
                      "(--config.seed=S).")
  if config.batch_size < 1:
    raise ConfigError(f"batch_size={config.batch_size}: GPT-2 needs >= 1 sequences per step.")
  if factory.nexus_enabled(config.optimizer):
    k = len(_plus_list(config.data.sources))
    per_source = config.batch_size // k
    if config.batch_size % k or per_source % config.grad_accum_steps:
      raise ConfigError(f"batch_size={config.batch_size} with optimizer.nexus: each of the {k} "
                        f"data.sources gets batch_size / {k} sequences per step, split into "
                        f"grad_accum_steps={config.grad_accum_steps} microbatches; pick a "
                        f"multiple of {k * config.grad_accum_steps}.")
    if config.data.weights:
      raise ConfigError(f"data.weights={config.data.weights!r} with optimizer.nexus: Nexus "
                        "reads one equal batch per source per step; leave data.weights empty.")
  if config.batch_size % config.grad_accum_steps:
    raise ConfigError(f"batch_size={config.batch_size} is not divisible by grad_accum_steps="
                      f"{config.grad_accum_steps}: each microbatch has batch_size / "
                      "grad_accum_steps sequences.")
  block = gpt2.CONFIGS[config.model.size].block_size
  if config.data.seq_len > block:
    raise ConfigError(f"data.seq_len={config.data.seq_len} exceeds the context of "
                      f"model.size={config.model.size!r} ({block}); lower data.seq_len.")
  weights = _plus_list(config.data.weights)
  if weights and len(weights) != len(_plus_list(config.data.sources)):
    raise ConfigError(f"data.weights={config.data.weights!r} has {len(weights)} entries for "
                      f"the {len(_plus_list(config.data.sources))} data.sources "
                      f"{config.data.sources!r}.")


def validate_config(config) -> None:
  """Raises ConfigError with a one-line message on the first problem found."""
  flat = wd.flatten(config)
  model = flat.get("model.name")
  if model not in EXPERIMENTS and model not in LOOPS:
    raise ConfigError(f"model.name={model!r} is not a known model; known: "
                      f"{sorted([*EXPERIMENTS, *LOOPS])}.")
  schema = {**_FIELDS, **{"relu2": _RELU2_FIELDS, "gpt2": _GPT2_FIELDS}[model]}
  known_sections = {"model", "data", "optimizer"}
  for key in flat:
    section = key.split(".")[0]
    if key not in schema and section not in ("optimizer",):
      raise ConfigError(f"Unknown config field {key!r}; fields of a {model} config: "
                        f"{sorted(k for k in schema if '.' not in k)} and the sections "
                        f"{sorted(known_sections)}.")
  for key, (kind, check, valid) in schema.items():
    if key not in flat:
      raise ConfigError(f"Config field {key!r} is missing; add it to the config file.")
    value = flat[key]
    type_ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
               if kind is float else isinstance(value, kind)
               and not (kind is int and isinstance(value, bool)))
    if not type_ok:
      raise ConfigError(f"Config field {key}={value!r} should be a {kind.__name__}.")
    if not check(value):
      raise ConfigError(f"Config field {key}={value!r} is impossible: it must be {valid}.")
  try:
    factory.check_optimizer_config(config.optimizer)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  if model == "relu2":
    if flat["data.loss"] == "logistic" and flat["data.task"] not in synthetic.CLASSIFICATION_TASKS:
      raise ConfigError(f"data.loss='logistic' needs ±1 labels, but data.task="
                        f"{flat['data.task']!r} is a regression; use data.loss='squared'.")
    if flat["data.loss"] == "logistic" and flat["model.out_dim"] != 1:
      raise ConfigError("data.loss='logistic' needs model.out_dim=1.")
    if factory.nexus_enabled(config.optimizer):
      raise ConfigError("optimizer.nexus.enabled needs data sources (a gradient per source); "
                        "the relu2 trainer has one task: use a GPT-2 config.")
  if model == "gpt2":
    check_gpt2_config(config)


def check_resume_config(workdir: Path, config, override: bool) -> None:
  """Writes config.json on a fresh run; on a resume refuses a different config."""
  path = workdir / wd.CONFIG_FILE
  new = json.loads(json.dumps(config.to_dict(), default=str))
  if path.exists():
    old = json.loads(path.read_text())
    # Logging/checkpoint cadence does not change the trajectory.
    ignored = {"log_every", "checkpoint_every", "keep_checkpoints", "similarity_every"}
    old_flat, new_flat = wd.flatten(old), wd.flatten(new)
    if not new_flat.get("optimizer.nexus.enabled", False):
      # Workdirs from before the optimizer.nexus section: disabled is the same run.
      ignored |= {k for k in new_flat if k.startswith("optimizer.nexus.") and k not in old_flat}
    diffs = [f"{k}: {old_flat.get(k, '<absent>')!r} -> {new_flat.get(k, '<absent>')!r}"
             for k in sorted(set(old_flat) | set(new_flat))
             if k not in ignored and old_flat.get(k, "<absent>") != new_flat.get(k, "<absent>")]
    if diffs and not override:
      raise ConfigError(f"{workdir} was started with a different config ({'; '.join(diffs)}); "
                        "use a new --workdir, or pass --override_config to resume anyway.")
    if diffs:
      logging.warning("Resuming %s with a changed config: %s", workdir, "; ".join(diffs))
      path.rename(workdir / f"config.replaced_{int(time.time())}.json")
  path.write_text(json.dumps(new, indent=2, sort_keys=True) + "\n")


# ---------------------------------------------------------------------------
# The train state: {"step": (), "seeds": {...every leaf with a leading S axis}}.

def init_state(exp: Experiment, tx: optax.GradientTransformation, config) -> dict:
  """S independent initial states, one per seed config.seed + i."""
  def init_one(seed):
    init_key, data_key, rng = jax.random.split(jax.random.PRNGKey(seed), 3)
    params = exp.init_params(init_key)
    return {"params": params, "opt_state": tx.init(params), "data_key": data_key,
            "rng": rng, "first_nonfinite_step": jnp.int32(-1)}
  seeds_S = jnp.arange(config.num_seeds, dtype=jnp.int32) + config.seed
  return {"step": jnp.int32(0), "seeds": jax.jit(jax.vmap(init_one))(seeds_S)}


def _all_finite(tree) -> jax.Array:
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def make_train_step(exp: Experiment, tx: optax.GradientTransformation,
                    seed_chunk_size: int = 0):
  """state -> (state, metrics): one update of every seed, vmapped and jitted.

  seed_chunk_size = 0 vmaps all S seeds at once (best on an accelerator); k > 0
  runs chunks of k vmapped seeds in a loop inside the step, which on a CPU keeps
  the (k, n, width) activations in cache: 64 seeds of width 256 run ~10x faster
  in chunks of 8 than all at once on a 2-core CPU. The state is not donated: an
  asynchronous checkpoint may still be copying it.
  """
  def step_one(seed_state, step):  # step: the update's number, 1-based.
    rng, step_rng = jax.random.split(seed_state["rng"])
    batch = exp.get_batch(seed_state["data_key"], step - 1)
    (loss, aux), grads = jax.value_and_grad(exp.loss_fn, has_aux=True)(
        seed_state["params"], batch, step_rng)
    updates, opt_state = tx.update(grads, seed_state["opt_state"], seed_state["params"])
    params = optax.apply_updates(seed_state["params"], updates)
    # Check the new params too: a finite loss can still give an inf update.
    finite = jnp.isfinite(loss) & _all_finite(params)
    first_bad = seed_state["first_nonfinite_step"]
    first_bad = jnp.where((first_bad < 0) & ~finite, step, first_bad)
    new_state = {"params": params, "opt_state": opt_state, "rng": rng,
                 "data_key": seed_state["data_key"], "first_nonfinite_step": first_bad}
    return new_state, {"train_loss": loss, "grad_norm": optax.tree.norm(grads), **aux}

  @jax.jit
  def train_step(state):
    step = state["step"] + 1
    if seed_chunk_size:  # Chunks of seeds one after another, each chunk vmapped.
      seeds, metrics = jax.lax.map(lambda seed_state: step_one(seed_state, step),
                                   state["seeds"], batch_size=seed_chunk_size)
    else:
      seeds, metrics = jax.vmap(step_one, in_axes=(0, None))(state["seeds"], step)
    return {"step": step, "seeds": seeds}, metrics

  return train_step


# ---------------------------------------------------------------------------
# Checkpoints.

def _manager(workdir: Path, config) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
      workdir / wd.CHECKPOINT_DIR,
      options=ocp.CheckpointManagerOptions(
          max_to_keep=config.keep_checkpoints, enable_async_checkpointing=True,
          cleanup_tmp_directories=True))  # Unfinished saves of a killed run.


def _split_state(state: dict) -> tuple[Any, dict]:
  seeds = dict(state["seeds"])
  return seeds.pop("params"), {"step": state["step"], "seeds": seeds}


def save_checkpoint(manager, state: dict, exp: Experiment) -> None:
  params, rest = _split_state(state)
  step = int(state["step"])
  manager.save(step, args=ocp.args.Composite(**{
      wd.PARAMS_ITEM: ocp.args.StandardSave(params),
      wd.TRAIN_STATE_ITEM: ocp.args.StandardSave(rest),
      wd.DATA_ITEM: ocp.args.JsonSave(exp.iterator_state(step))}))


def restore_checkpoint(manager, state: dict, exp: Experiment, step: int) -> dict:
  params, rest = _split_state(state)
  restored = manager.restore(step, args=ocp.args.Composite(**{
      wd.PARAMS_ITEM: ocp.args.StandardRestore(params),
      wd.TRAIN_STATE_ITEM: ocp.args.StandardRestore(rest),
      wd.DATA_ITEM: ocp.args.JsonRestore()}))
  if restored[wd.DATA_ITEM] != exp.iterator_state(step):
    raise ConfigError(f"Checkpoint {step}'s data iterator {restored[wd.DATA_ITEM]} does not "
                      f"match this config's {exp.iterator_state(step)}.")
  rest = restored[wd.TRAIN_STATE_ITEM]
  # Restore the optimizer state's NamedTuples (orbax gives plain containers).
  rest = jax.tree.unflatten(jax.tree.structure(_split_state(state)[1]),
                            jax.tree.leaves(rest))
  return {"step": rest["step"], "seeds": {"params": restored[wd.PARAMS_ITEM],
                                          **rest["seeds"]}}


def raise_if_nonfinite(state: dict, manager, config) -> None:
  first_bad_S = np.asarray(state["seeds"]["first_nonfinite_step"])
  if (first_bad_S < 0).all():
    return
  manager.wait_until_finished()
  step = int(first_bad_S[first_bad_S >= 0].min())
  bad_seeds = [config.seed + i for i in np.flatnonzero(first_bad_S >= 0)]
  last = manager.latest_step()
  where = (f"the last good checkpoint is step {last} in {manager.directory}"
           if last is not None else "there is no checkpoint yet")
  raise NonFiniteError(
      f"Non-finite loss or parameters at step {step} (seeds {bad_seeds}); {where}. "
      "Lower optimizer.learning_rate or set optimizer.grad_clip_norm, then rerun "
      "(with --override_config to resume from that checkpoint).")


# ---------------------------------------------------------------------------
# Metrics and the summary.

class MetricWriter:
  """metrics.jsonl (one line per logged step) and TensorBoard scalars."""

  def __init__(self, workdir: Path, resume_step: int):
    from tensorboardX import SummaryWriter  # Not clu: it imports TensorFlow.
    self.path = workdir / wd.METRICS_FILE
    if self.path.exists():  # Drop lines past the checkpoint: they are redone.
      lines = [l for l in self.path.read_text().splitlines()
               if l.strip() and json.loads(l)["step"] <= resume_step]
      self.path.write_text("".join(l + "\n" for l in lines))
    self.file = self.path.open("a")
    self.tb = SummaryWriter(str(workdir / wd.TENSORBOARD_DIR))

  def write(self, step: int, per_seed: dict[str, np.ndarray], extra: dict) -> dict:
    row = {"step": step}
    for name, values_S in per_seed.items():
      row[name] = float(np.mean(values_S))
      row[f"{name}_per_seed"] = [float(v) for v in values_S]
      self.tb.add_scalar(name, row[name], step)
      if len(values_S) > 1:
        self.tb.add_scalar(f"{name}_max_over_seeds", float(np.max(values_S)), step)
    for name, value in extra.items():
      row[name] = value
      if np.ndim(value) == 0:  # Matrices (lists) go to the JSONL only.
        self.tb.add_scalar(name, value, step)
    self.file.write(json.dumps(row) + "\n")
    self.file.flush()
    return row

  def close(self):
    self.file.close()
    self.tb.close()


def _leaf_name(path) -> str:
  return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def make_summary(exp: Experiment, config, params_S) -> dict:
  """Final losses per seed, λ·K*(θ) per layer for the optimizer's own K, norms."""
  final = jax.device_get(jax.jit(jax.vmap(exp.evaluate))(params_S))
  return {"final": {k: np.asarray(v).tolist() for k, v in final.items()},
          **{f"final_{k}": float(np.mean(v)) for k, v in final.items()},
          **constraint_summary(config, params_S)}


def constraint_summary(config, params_S) -> dict:
  """λ·K*(θ) per layer for the optimizer's own K, and norms, of every seed."""
  one_seed = jax.tree.map(lambda x: x[0], params_S)
  constraints = factory.implicit_constraints(config.optimizer, one_seed)
  named = jax.tree_util.tree_flatten_with_path(params_S)[0]
  layers, norms = {}, {}
  for (path, leaf_S), c in zip(named, jax.tree.leaves(constraints)):
    kfn = get_k(c.k, **c.k_options)
    dual_S = np.asarray(jax.vmap(kfn.dual_norm)(leaf_S), np.float64)
    layers[_leaf_name(path)] = {
        "k": c.k, "dual_norm": dual_S.tolist(), "weight_decay": c.weight_decay,
        "lambda_dual_norm": (c.weight_decay * dual_S).tolist(), "bound": c.bound}
    flat_SxP = np.asarray(leaf_S, np.float64).reshape(leaf_S.shape[0], -1)
    norms[_leaf_name(path)] = {"frobenius": np.linalg.norm(flat_SxP, axis=1).tolist(),
                               "max_abs": np.abs(flat_SxP).max(axis=1).tolist()}
  return {"constraints": layers, "param_norms": norms}


# ---------------------------------------------------------------------------
# The loop.

class _Preemption:
  """Turns SIGTERM into a flag the loop checks after each step."""

  def __init__(self):
    self.requested = False

  def __enter__(self):
    self.previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True

  def __exit__(self, *exc):
    signal.signal(signal.SIGTERM, self.previous)

  def checkpoint(self, step: int, last: bool, every: int, directory, check, save) -> bool:
    """Saves every ``every`` steps, at the last step and on SIGTERM, after
    ``check()`` (which raises on a non-finite state: a NaN is never saved).
    True when SIGTERM asks the loop to stop."""
    if step % every == 0 or last or self.requested:
      check()
      save()
    if self.requested and not last:
      logging.warning("SIGTERM: saved step %d to %s; rerun the same command to resume.",
                      step, directory)
      return True
    return False


def train_and_evaluate(config: ml_collections.ConfigDict, workdir,
                       override_config: bool = False) -> dict:
  """Trains config in workdir (resuming it if it has a checkpoint); returns the
  summary (also in WORKDIR/summary.json), or {"status": "preempted", ...}."""
  validate_config(config)
  workdir = Path(workdir).resolve()  # orbax needs absolute paths.
  workdir.mkdir(parents=True, exist_ok=True)
  check_resume_config(workdir, config, override_config)
  if config.model.name == "gpt2":
    return train_gpt2(config, workdir)

  exp = EXPERIMENTS[config.model.name](config)
  tx = factory.make_optimizer(config.optimizer, config.num_steps)
  schedule = factory.make_schedule(
      config.optimizer.learning_rate, config.num_steps,
      **{k: config.optimizer[k] for k in
         ("schedule", "warmup_steps", "decay_fraction", "final_lr_fraction")})
  state = init_state(exp, tx, config)
  train_step = make_train_step(exp, tx, config.seed_chunk_size)

  manager = _manager(workdir, config)
  resume_step = manager.latest_step() or 0
  if resume_step:
    state = restore_checkpoint(manager, state, exp, resume_step)
    logging.info("Resumed %s from step %d.", workdir, resume_step)
  writer = MetricWriter(workdir, resume_step)
  start = int(state["step"])
  t_last, step_last, t_first, status = time.time(), start, None, "finished"
  # closing(): the manager waits for its async saves, even on an exception.
  with contextlib.closing(manager), contextlib.closing(writer), _Preemption() as preemption:
    for step in range(start + 1, config.num_steps + 1):
      state, metrics = train_step(state)
      if t_first is None:  # Time from the end of the first (compiling) step.
        jax.block_until_ready(state)
        t_first = time.time()
      last = step == config.num_steps
      if step % config.log_every == 0 or last:
        metrics = jax.device_get(metrics)
        raise_if_nonfinite(state, manager, config)
        now = time.time()
        rate = (step - step_last) / max(now - t_last, 1e-9)
        row = writer.write(step, metrics, {"learning_rate": float(schedule(step - 1)),
                                           "steps_per_sec": rate})
        logging.info("step %d/%d  train_loss %.3e (mean of %d seeds)  %.1f steps/s",
                     step, config.num_steps, row["train_loss"], config.num_seeds, rate)
        t_last, step_last = now, step
      if preemption.checkpoint(
          step, last, config.checkpoint_every, manager.directory,
          check=lambda: raise_if_nonfinite(state, manager, config),
          save=lambda: save_checkpoint(manager, state, exp)):
        status = "preempted"
        break
    jax.block_until_ready(state)
    t_end = time.time()

  step = int(state["step"])
  if status == "preempted":
    return {"status": status, "step": step}
  summary = {"status": status, "num_steps": config.num_steps,
             "num_seeds": config.num_seeds, "seeds": wd.seeds(config),
             "resumed_from_step": resume_step,
             **make_summary(exp, config, state["seeds"]["params"])}
  steps_timed = step - start - 1
  if t_first is not None and steps_timed > 0:
    summary["steps_per_sec"] = steps_timed / max(t_end - t_first, 1e-9)
    summary["seed_steps_per_sec"] = summary["steps_per_sec"] * config.num_seeds
  (workdir / wd.SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
  logging.info("Done: final train_loss %.3e, test_loss %s; summary in %s.",
               summary.get("final_train_loss", float("nan")),
               summary.get("final_test_loss"), workdir / wd.SUMMARY_FILE)
  return summary


# ---------------------------------------------------------------------------
# GPT-2: a host-side grain iterator over a mixture of text sources, the batch
# sharded over a "data" axis of all devices (parameters replicated), gradient
# accumulation inside the jitted step. The state is one seed's; checkpoints
# store it with a leading seed axis of size 1, like relu2's (analysis/workdir.py).

def make_data_mesh() -> jax.sharding.Mesh:
  """All devices on one "data" axis; Auto axis types (a sharded gather under the
  default Explicit types raises ShardingTypeError, see DESIGN.md)."""
  return jax.make_mesh((jax.device_count(),), ("data",),
                       axis_types=(jax.sharding.AxisType.Auto,))


class GPT2Data(NamedTuple):
  tokenizer: Any
  loader: Any    # grain IterDataset of mixture batches, or of {source: batch} (Nexus)
  val: dict[str, dict[str, np.ndarray]]   # source -> {"inputs", "targets"}: (N, E, T)
  ood: dict[str, dict[str, np.ndarray]]


def _stacked_eval_batches(windows, config) -> dict[str, np.ndarray]:
  batches = list(text_pipeline.eval_batches(windows, config.eval_batch_size,
                                            config.eval_batches))
  return {k: np.stack([b[k] for b in batches]) for k in ("inputs", "targets")}


def gpt2_data(config, workdir: Path) -> GPT2Data:
  d = config.data
  sources = _plus_list(d.sources)
  kwargs = {"max_chars": d.max_chars} if d.max_chars else {}
  if d.tokenizer == "bpe":  # trained once on the training splits, cached in the workdir
    texts = [t for s in sources for t in text_sources.load_source(s, "train", **kwargs).documents]
    tok = tokenizers.get_tokenizer("bpe", workdir=str(workdir / "tokenizer"),
                                   vocab_size=d.bpe_vocab_size, texts=texts)
  else:
    tok = tokenizers.get_tokenizer(d.tokenizer)
  train = text_pipeline.build_text_windows(sources, "train", tok, d.seq_len, **kwargs)
  weights = [float(w) for w in _plus_list(d.weights)] or None
  if factory.nexus_enabled(config.optimizer):  # batch_size / K sequences of every source
    loader = text_pipeline.per_source_loader(train, config.batch_size // len(sources),
                                             seed=config.seed)
  else:
    loader = text_pipeline.mixture_loader(train, weights, config.batch_size, seed=config.seed)
  val = text_pipeline.build_text_windows(sources, "validation", tok, d.seq_len, **kwargs)
  ood_names = _plus_list(d.ood_sources)
  ood = text_pipeline.build_text_windows(ood_names, "test", tok, d.seq_len, **kwargs) \
      if ood_names else {}
  return GPT2Data(tok, loader, {n: _stacked_eval_batches(w, config) for n, w in val.items()},
                  {n: _stacked_eval_batches(w, config) for n, w in ood.items()})


def gpt2_model_config(config, vocab_size: int) -> gpt2.GPT2Config:
  return dataclasses.replace(
      gpt2.CONFIGS[config.model.size], vocab_size=vocab_size, dropout=config.model.dropout,
      dtype=jnp.dtype(config.model.dtype), remat=config.model.remat)


def make_gpt2_steps(model: gpt2.GPT2, tx, mesh, grad_accum_steps: int, num_sources: int = 0):
  """(train_step, eval_loss, batch sharding), jitted with shardings.

  num_sources = 0: train_step(state, inputs_AxMxT, targets_AxMxT) -> (state,
  metrics): the mean gradient over A microbatches of M sequences (lax.scan), one
  update. num_sources = K ≥ 1 (tx is Nexus): train_step(state, inputs_KxAxMxT,
  targets_KxAxMxT) builds grad_fn(params, s), the mean gradient over source s's
  A microbatches, and calls tx.update(None, opt_state, params, grad_fn=grad_fn);
  Nexus's k inner steps each call it once. Its metrics are the update's norm
  only: the loss at θ is `batch_loss`, computed on logged steps (an extra
  forward pass every step would cost Nexus ~1/3 of a step).
  The state is donated: checkpoints save a host copy taken before the next step.
  eval_loss(params, inputs_NxExT, targets_NxExT) -> the mean loss of N batches.
  """
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  lead = (None,) * (2 if num_sources else 1)
  batched = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(*lead, "data"))
  eval_batched = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(None, "data"))
  dropout = model.config.dropout > 0

  def accumulated_grad(params, inputs_AxMxT, targets_AxMxT, step_rng):
    def microbatch(grads_sum, xs):
      i, inputs_MxT, targets_MxT = xs
      drop_rng = jax.random.fold_in(step_rng, i) if dropout else None
      loss, grads = jax.value_and_grad(gpt2.loss_fn)(params, model, inputs_MxT,
                                                     targets_MxT, None, drop_rng)
      return jax.tree.map(jnp.add, grads_sum, grads), loss

    zeros = jax.tree.map(jnp.zeros_like, params)
    grads_sum, losses_A = jax.lax.scan(
        microbatch, zeros, (jnp.arange(grad_accum_steps), inputs_AxMxT, targets_AxMxT))
    return jax.tree.map(lambda g: g / grad_accum_steps, grads_sum), losses_A.mean()

  def finish(state, rng, params, opt_state, loss):
    step = state["step"] + 1
    finite = jnp.isfinite(loss) & _all_finite(params)
    first_bad = state["first_nonfinite_step"]
    first_bad = jnp.where((first_bad < 0) & ~finite, step, first_bad)
    return {"step": step, "params": params, "opt_state": opt_state, "rng": rng,
            "first_nonfinite_step": first_bad}

  def train_step(state, inputs_AxMxT, targets_AxMxT):
    rng, step_rng = jax.random.split(state["rng"])
    params = state["params"]
    grads, loss = accumulated_grad(params, inputs_AxMxT, targets_AxMxT, step_rng)
    updates, opt_state = tx.update(grads, state["opt_state"], params)
    params = optax.apply_updates(params, updates)
    new_state = finish(state, rng, params, opt_state, loss)
    return new_state, {"train_loss": loss, "grad_norm": optax.tree.norm(grads)}

  def nexus_step(state, inputs_KxAxMxT, targets_KxAxMxT):
    rng, step_rng = jax.random.split(state["rng"])
    params = state["params"]

    def grad_fn(p, source):  # source: a traced int32 in [0, K)
      drop_rng = jax.random.fold_in(step_rng, source)
      return accumulated_grad(p, inputs_KxAxMxT[source], targets_KxAxMxT[source], drop_rng)[0]

    updates, opt_state = tx.update(None, state["opt_state"], params, grad_fn=grad_fn)
    params = optax.apply_updates(params, updates)
    new_state = finish(state, rng, params, opt_state, jnp.float32(0.0))
    return new_state, {"update_norm": optax.tree.norm(updates)}

  def eval_loss(params, inputs_NxExT, targets_NxExT):
    losses_N = jax.lax.map(lambda xy: gpt2.loss_fn(params, model, *xy),
                           (inputs_NxExT, targets_NxExT))
    return losses_N.mean()

  train_step = jax.jit(nexus_step if num_sources else train_step,
                       in_shardings=(replicated, batched, batched),
                       out_shardings=(replicated, replicated), donate_argnums=(0,))
  eval_loss = jax.jit(eval_loss, in_shardings=(replicated, eval_batched, eval_batched),
                      out_shardings=replicated)
  return train_step, eval_loss, batched


def batch_loss(model: gpt2.GPT2):
  """Jitted (params, inputs_...xMxT, targets_...xMxT) -> the mean loss over all
  leading axes: the loss at θ of a step's batch (for Nexus, of all K sources)."""
  def loss(params, inputs, targets):
    m, t = inputs.shape[-2:]
    return jax.lax.map(lambda xy: gpt2.loss_fn(params, model, *xy),
                       (inputs.reshape(-1, m, t), targets.reshape(-1, m, t))).mean()
  return jax.jit(loss)


def _stack_seed(state: dict) -> dict:
  """The relu2 checkpoint layout: {"step", "seeds": leaves with a seed axis of 1}."""
  host = jax.device_get(state)
  seeds = {k: v for k, v in host.items() if k != "step"}
  return {"step": host["step"], "seeds": jax.tree.map(lambda x: np.asarray(x)[None], seeds)}


def _unstack_seed(stacked: dict) -> dict:
  return {"step": stacked["step"], **jax.tree.map(lambda x: x[0], stacked["seeds"])}


def save_gpt2_checkpoint(manager, state: dict, iterator) -> None:
  params, rest = _split_state(_stack_seed(state))
  step = int(rest["step"])
  manager.save(step, args=ocp.args.Composite(**{
      wd.PARAMS_ITEM: ocp.args.StandardSave(params),
      wd.TRAIN_STATE_ITEM: ocp.args.StandardSave(rest),
      wd.DATA_ITEM: ocp.args.JsonSave({"step": step, "grain": iterator.get_state()})}))


def restore_gpt2_checkpoint(manager, state: dict, iterator, step: int, replicated) -> dict:
  template = _stack_seed(state)
  params, rest = _split_state(template)
  restored = manager.restore(step, args=ocp.args.Composite(**{
      wd.PARAMS_ITEM: ocp.args.StandardRestore(params),
      wd.TRAIN_STATE_ITEM: ocp.args.StandardRestore(rest),
      wd.DATA_ITEM: ocp.args.JsonRestore()}))
  data_state = restored[wd.DATA_ITEM]
  if data_state.get("step") != step:
    raise ConfigError(f"Checkpoint {step}'s data iterator state is for step "
                      f"{data_state.get('step')}; the checkpoint is corrupt.")
  iterator.set_state(data_state["grain"])
  rest = jax.tree.unflatten(jax.tree.structure(rest), jax.tree.leaves(restored[wd.TRAIN_STATE_ITEM]))
  stacked = {"step": rest["step"], "seeds": {"params": restored[wd.PARAMS_ITEM], **rest["seeds"]}}
  stacked = jax.tree.unflatten(jax.tree.structure(template), jax.tree.leaves(stacked))
  return jax.device_put(_unstack_seed(stacked), replicated)


def measure_peak_flops(n: int = 1024, repeats: int = 5) -> float:
  """FLOP/s of a jitted f32 n×n matmul on all devices (a stand-in for the peak
  where none is known, e.g. a CPU): MFU against it is an upper-bound-ish guess."""
  x = jnp.ones((jax.device_count(), n, n), jnp.float32)
  f = jax.jit(jax.vmap(lambda a: a @ a))
  jax.block_until_ready(f(x))
  t = time.time()
  for _ in range(repeats):
    jax.block_until_ready(f(x))
  return 2.0 * n**3 * jax.device_count() * repeats / max(time.time() - t, 1e-9)


def _to_device_batch(batch: dict, k: int, sharding, sources=None
                     ) -> tuple[jax.Array, jax.Array]:
  """(inputs, targets) as (A, B/A, T), A = k microbatches; with ``sources`` (a
  per-source batch {name: {"inputs": (B/K, T), ...}}) stacked as (K, A, B/(K·A), T)."""
  out = []
  for name in ("inputs", "targets"):
    if sources is None:
      x_BxT = np.asarray(batch[name], np.int32)
      x = x_BxT.reshape(k, -1, x_BxT.shape[-1])
    else:
      x = np.stack([np.asarray(batch[s][name], np.int32) for s in sources])
      x = x.reshape(len(sources), k, -1, x.shape[-1])
    out.append(jax.device_put(x, sharding))
  return tuple(out)


def make_similarity(model: gpt2.GPT2, val: dict, sources: list[str]):
  """() -> params -> {"grad_cosine": K×K list, "grad_cosine/mean_pairwise", ...}:
  the sources' gradient cosines on their fixed validation batches: the first N
  of each, N the smallest count (a small source, e.g. prose, may have fewer
  than eval_batches), so every source's gradient sees the same number of tokens."""
  n = min(val[s]["inputs"].shape[0] for s in sources)
  if n < max(val[s]["inputs"].shape[0] for s in sources):
    logging.info("Gradient cosines on %d validation batches per source (the smallest "
                 "source's count).", n)
  batches = {k: np.stack([val[s][k][:n] for s in sources]) for k in ("inputs", "targets")}

  def loss(params, batch):  # batch: {"inputs": (N, E, T), ...} of one source
    return jax.lax.map(lambda xy: gpt2.loss_fn(params, model, *xy),
                       (batch["inputs"], batch["targets"])).mean()

  def similarity(params) -> dict:
    sim = source_geometry.gradient_similarity(loss, params, batches)
    out = {"grad_cosine": np.round(sim["cosine"], 6).tolist(),
           "grad_cosine/mean_pairwise": sim["mean_pairwise"],
           "grad_cosine/sources": list(sources)}
    for i, a in enumerate(sources):
      for j in range(i + 1, len(sources)):
        out[f"grad_cosine/{a}-{sources[j]}"] = float(sim["cosine"][i, j])
    return out
  return similarity


def train_gpt2(config, workdir: Path) -> dict:
  """train_and_evaluate for GPT-2 (config and workdir already checked)."""
  mesh = make_data_mesh()
  n_dev = jax.device_count()
  sources = _plus_list(config.data.sources)
  use_nexus = factory.nexus_enabled(config.optimizer)
  # Nexus: batch_size / K sequences of each of the K sources per step.
  per_step = config.batch_size // len(sources) if use_nexus else config.batch_size
  micro = per_step // config.grad_accum_steps
  for name, size in (("batch_size / grad_accum_steps", micro),
                     ("eval_batch_size", config.eval_batch_size)):
    if size % n_dev:
      raise ConfigError(f"{name} = {size} is not divisible by the {n_dev} devices the batch "
                        "is sharded over; pick a multiple.")
  data = gpt2_data(config, workdir)
  model = gpt2.GPT2(gpt2_model_config(config, data.tokenizer.vocab_size))
  tx = factory.make_optimizer(config.optimizer, config.num_steps, num_sources=len(sources))
  schedule = factory.make_schedule(
      config.optimizer.learning_rate, config.num_steps,
      **{k: config.optimizer[k] for k in
         ("schedule", "warmup_steps", "decay_fraction", "final_lr_fraction")})
  train_step, eval_loss, batched = make_gpt2_steps(
      model, tx, mesh, config.grad_accum_steps, len(sources) if use_nexus else 0)
  step_loss = batch_loss(model) if use_nexus else None
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())

  def init(seed):
    init_key, rng = jax.random.split(jax.random.PRNGKey(seed))
    params = gpt2.init_params(model, init_key, config.data.seq_len)
    return {"step": jnp.int32(0), "params": params, "opt_state": tx.init(params),
            "rng": rng, "first_nonfinite_step": jnp.int32(-1)}
  state = jax.jit(init, static_argnums=0, out_shardings=replicated)(config.seed)
  iterator = iter(data.loader)

  manager = _manager(workdir, config)
  resume_step = manager.latest_step() or 0
  if resume_step:
    state = restore_gpt2_checkpoint(manager, state, iterator, resume_step, replicated)
    logging.info("Resumed %s from step %d.", workdir, resume_step)

  n_params = gpt2.count_params(state["params"])
  flops_tok = gpt2.flops_per_token(model.config, config.data.seq_len)
  peak = config.peak_flops if config.peak_flops >= 0 else measure_peak_flops()
  # Tokens read from the data per step: batch_size·T, with or without Nexus (K
  # source batches of batch_size/K). Tokens through forward+backward per step
  # (what the FLOPs count): the same without Nexus; k·(batch_size/K)·T with it.
  tokens_per_step = config.batch_size * config.data.seq_len
  grad_tokens_per_step = (config.optimizer.nexus.inner_steps * per_step * config.data.seq_len
                          if use_nexus else tokens_per_step)
  logging.info("GPT-2 %s: %d params, %.3g FLOPs/token, %d devices, %d tokens/step%s%s.",
               config.model.size, n_params, flops_tok, n_dev, tokens_per_step,
               f" (Nexus: {len(sources)} sources × {per_step} sequences, "
               f"{config.optimizer.nexus.inner_steps} inner steps: "
               f"{grad_tokens_per_step} tokens through forward+backward)" if use_nexus else "",
               f", peak {peak:.3g} FLOP/s" if peak > 0 else "")
  eval_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(None, "data"))
  val = {n: tuple(jax.device_put(b[k], eval_sharding) for k in ("inputs", "targets"))
         for n, b in data.val.items()}
  similarity = make_similarity(model, data.val, sources) if config.similarity_every else None

  def evaluate(params, batches) -> dict[str, float]:
    losses = {n: float(eval_loss(params, *b)) for n, b in batches.items()}
    if losses:
      losses["mean"] = float(np.mean(list(losses.values())))
    return losses

  def check_finite(state):
    bad = int(state["first_nonfinite_step"])
    if bad >= 0:
      raise_if_nonfinite({"seeds": {"first_nonfinite_step": np.asarray([bad])}}, manager, config)

  writer = MetricWriter(workdir, resume_step)
  start = int(state["step"])
  t_last, step_last, status = time.time(), start, "finished"
  train_time, eval_time, t_first, last_val = 0.0, 0.0, None, {}
  # closing(): the manager waits for its async saves, even on an exception.
  with contextlib.closing(manager), contextlib.closing(writer), _Preemption() as preemption:
    for step in range(start + 1, config.num_steps + 1):
      inputs, targets = _to_device_batch(next(iterator), config.grad_accum_steps, batched,
                                         sources if use_nexus else None)
      last = step == config.num_steps
      logged = step % config.log_every == 0 or last
      if use_nexus and logged:  # The loss at θ of this step's K source batches.
        nexus_loss = step_loss(state["params"], inputs, targets)
      state, metrics = train_step(state, inputs, targets)
      if use_nexus and logged:
        metrics = {"train_loss": nexus_loss, **metrics}
      if t_first is None:  # Time from the end of the first (compiling) step.
        jax.block_until_ready(state)
        t_first = t_last = time.time()
        step_last = step
      evaluated = step % config.eval_every == 0 or last
      measured = bool(similarity) and step % config.similarity_every == 0
      if logged or evaluated or measured:
        metrics = jax.device_get(metrics)
        check_finite(state)
        now = time.time()
        train_time += now - t_last
        rate = (step - step_last) / max(now - t_last, 1e-9)
        extra = {"learning_rate": float(schedule(step - 1))}
        if step > step_last:
          extra.update(steps_per_sec=rate, tokens_per_sec=rate * tokens_per_step,
                       model_flops_per_sec=rate * grad_tokens_per_step * flops_tok)
          if peak > 0:
            extra["mfu"] = extra["model_flops_per_sec"] / peak
        if evaluated:
          t_eval = time.time()
          last_val = evaluate(state["params"], val)
          extra.update({f"val_loss/{n}": v for n, v in last_val.items()})
          eval_time += time.time() - t_eval
        if measured:
          t_eval = time.time()
          extra.update(similarity(state["params"]))
          eval_time += time.time() - t_eval
        row = writer.write(step, {k: np.asarray([v]) for k, v in metrics.items()}, extra)
        logging.info("step %d/%d  train_loss %.4f%s  %.0f tokens/s", step, config.num_steps,
                     row.get("train_loss", float("nan")), f"  val_loss {last_val['mean']:.4f}"
                     if evaluated and last_val else "", extra.get("tokens_per_sec", 0.0))
        t_last, step_last = time.time(), step
      if preemption.checkpoint(
          step, last, config.checkpoint_every, manager.directory,
          check=lambda: check_finite(state),
          save=lambda: save_gpt2_checkpoint(manager, state, iterator)):
        status = "preempted"
        break
    jax.block_until_ready(state)

  step = int(state["step"])
  if status == "preempted":
    return {"status": status, "step": step}
  # The last step always evaluates; a rerun of a finished run evaluates here.
  final_val = last_val or evaluate(state["params"], val)
  ood = {n: tuple(jax.device_put(b[k], eval_sharding) for k in ("inputs", "targets"))
         for n, b in data.ood.items()}
  final_ood = evaluate(state["params"], ood)
  params_S = jax.tree.map(lambda x: np.asarray(x)[None], jax.device_get(state["params"]))
  summary = {"status": status, "num_steps": config.num_steps, "num_seeds": 1,
             "seeds": wd.seeds(config), "resumed_from_step": resume_step,
             "num_params": n_params, "flops_per_token": flops_tok, "num_devices": n_dev,
             "tokenizer": data.tokenizer.name, "vocab_size": data.tokenizer.vocab_size,
             "final_val_loss": final_val, "final_ood_loss": final_ood,
             "final_val_loss_mean": final_val.get("mean"),
             "tokens_per_step": tokens_per_step, "grad_tokens_per_step": grad_tokens_per_step,
             "nexus": use_nexus,
             **constraint_summary(config, params_S)}
  if similarity:
    final_sim = similarity(state["params"])
    summary.update(final_grad_cosine=final_sim["grad_cosine"],
                   final_grad_cosine_mean_pairwise=final_sim["grad_cosine/mean_pairwise"])
  if t_first is not None and step - start - 1 > 0 and train_time > 0:
    rate = (step - start - 1) / train_time
    summary.update(steps_per_sec=rate, tokens_per_sec=rate * tokens_per_step,
                   model_flops_per_sec=rate * grad_tokens_per_step * flops_tok,
                   eval_seconds=eval_time)
    if peak > 0:
      summary.update(peak_flops=peak, mfu=summary["model_flops_per_sec"] / peak)
  (workdir / wd.SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
  logging.info("Done: validation loss %s, OOD loss %s, %.0f tokens/s; summary in %s.",
               final_val, final_ood, summary.get("tokens_per_sec", 0.0),
               workdir / wd.SUMMARY_FILE)
  return summary


def _quiet_orbax(record) -> bool:
  """Logging filter: orbax logs every save at INFO; keep its warnings only."""
  return record.levelno >= pylogging.WARNING or "/orbax/" not in record.pathname


def main(argv):
  logging.get_absl_logger().addFilter(_quiet_orbax)
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments {argv[1:]}; see --help.")
  try:
    config = _CONFIG.value
    if config is not None:
      config.keys()  # The file loads lazily, on first use: fail here, in one line.
  except (OSError, ImportError, SyntaxError) as e:
    sys.exit(f"train.py: cannot load --config: {' '.join(str(e).split())}")
  if config is None or _WORKDIR.value is None:
    sys.exit("train.py: both --config=configs/FILE.py[:VARIANT] and --workdir=DIR "
             "are required; see --help.")
  try:
    train_and_evaluate(config, _WORKDIR.value, _OVERRIDE.value)
  except (ConfigError, NonFiniteError) as e:
    sys.exit(f"train.py: {e}")  # One line, exit status 1, no traceback.


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with bad --config flags reported in one line."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    # A get_config(VARIANT) error arrives wrapped with its traceback: keep the
    # last line, the error itself.
    message = [l for l in str(e).splitlines() if l.strip()][-1].strip()
  except (AttributeError, KeyError) as e:  # --config.x=v with no field x.
    text = str(e).replace("\\", "")
    name = (re.findall(r"[A-Za-z_]\w*", text) or ["?"])[0]
    args = [a for a in argv[1:] if a.startswith("--config.")
            and name in a.split("=")[0].split(".")]
    hint = re.search(r'Did you mean "(\w+)"', text)
    message = (f"unknown config field {name!r} in {' '.join(args) or argv[1:]}"
               + (f" (did you mean {hint.group(1)!r}?)" if hint else "")
               + "; the config file's get_config defines the fields")
  except (ValueError, TypeError) as e:
    message = str(e)
  sys.exit(f"train.py: bad flags: {message.rstrip('.')}. See --help.")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
