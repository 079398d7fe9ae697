"""The relu2 trainer: S seeds of one config in one jitted, vmapped step.

The train state is {"step": (), "seeds": {params, opt_state, data_key, rng,
first_nonfinite_step}}, every seed leaf with a leading S axis; the data order
is a function of each seed's data key and the step, computed inside the step.
"""

from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from optimizers import factory
from training import checkpoints, finite, loop, metrics, tasks
from training import workdir as wd


def init_state(exp: tasks.Experiment, tx: optax.GradientTransformation, config) -> dict:
  """S independent initial states, one per seed config.seed + i."""

  def init_one(seed):
    init_key, data_key, rng = jax.random.split(jax.random.PRNGKey(seed), 3)
    params = exp.init_params(init_key)
    return {
      "params": params,
      "opt_state": tx.init(params),
      "data_key": data_key,
      "rng": rng,
      "first_nonfinite_step": jnp.int32(-1),
    }

  seeds_S = jnp.arange(config.num_seeds, dtype=jnp.int32) + config.seed
  return {"step": jnp.int32(0), "seeds": jax.jit(jax.vmap(init_one))(seeds_S)}


def all_finite(tree) -> jax.Array:
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def first_nonfinite(previous: jax.Array, step: jax.Array, loss: jax.Array, params) -> jax.Array:
  """The first step at which the loss or the new params were non-finite (-1:
  none yet). The params too: a finite loss can still give an inf update."""
  finite = jnp.isfinite(loss) & all_finite(params)
  return jnp.where((previous < 0) & ~finite, step, previous)


def make_train_step(
  exp: tasks.Experiment, tx: optax.GradientTransformation, seed_chunk_size: int = 0, mesh=None
):
  """state -> (state, metrics): one update of every seed, vmapped and jitted.

  seed_chunk_size = 0 vmaps all S seeds at once (best on an accelerator); k > 0
  runs chunks of k vmapped seeds in a loop inside the step, which on a CPU keeps
  the (k, n, width) activations in cache: 64 seeds of width 256 run ~10x faster
  in chunks of 8 than all at once on a 2-core CPU. The state is not donated: an
  asynchronous checkpoint may still be copying it.
  """

  def step_one(seed_state, record, step):  # step: the update's number, 1-based.
    rng, step_rng = jax.random.split(seed_state["rng"])
    batch = exp.get_batch(seed_state["data_key"], step - 1)
    (loss, aux), grads = jax.value_and_grad(exp.loss_fn, has_aux=True)(
      seed_state["params"], batch, step_rng
    )
    updates, opt_state = tx.update(grads, seed_state["opt_state"], seed_state["params"])
    params = optax.apply_updates(seed_state["params"], updates)
    first_bad = first_nonfinite(seed_state["first_nonfinite_step"], step, loss, params)
    new_state = {
      "params": params,
      "opt_state": opt_state,
      "rng": rng,
      "data_key": seed_state["data_key"],
      "first_nonfinite_step": first_bad,
    }
    record = finite.update_record(record, step, loss, grads, params)
    return new_state, record, {"train_loss": loss, "grad_norm": optax.tree.norm(grads), **aux}

  def train_step(state, record_S):
    """(state, non-finite record, metrics) after one step; the record
    (training.finite) is carried beside the state, not checkpointed."""
    step = state["step"] + 1
    if seed_chunk_size:  # Chunks of seeds one after another, each chunk vmapped.
      seeds, record_S, out = jax.lax.map(
        lambda xs: step_one(*xs, step), (state["seeds"], record_S), batch_size=seed_chunk_size
      )
    else:
      seeds, record_S, out = jax.vmap(step_one, in_axes=(0, 0, None))(
        state["seeds"], record_S, step
      )
    return {"step": step, "seeds": seeds}, record_S, out

  if mesh is None:
    return jax.jit(train_step)
  # Seeds are independent: each device steps its own seeds (and their chunks) with no
  # communication at all; the step counter is the same on every device.
  spec = jax.sharding.PartitionSpec("seeds")
  state_spec = {"step": jax.sharding.PartitionSpec(), "seeds": spec}
  return jax.jit(
    jax.shard_map(
      train_step, mesh=mesh, in_specs=(state_spec, spec), out_specs=(state_spec, spec, spec)
    )
  )


def seed_mesh(num_seeds: int) -> jax.sharding.Mesh | None:
  """A ("seeds",) mesh of every device when there are several and the seeds divide over
  them; None (one device holds every seed, as on a laptop) otherwise."""
  n = jax.device_count()
  if n == 1:
    return None
  if num_seeds % n:
    logging.warning(
      "%d seeds do not divide over %d devices: every seed runs on one device; use a "
      "multiple of %d seeds to spread them.",
      num_seeds,
      n,
      n,
    )
    return None
  return jax.make_mesh((n,), ("seeds",), axis_types=(jax.sharding.AxisType.Auto,))


def place(state: dict, mesh) -> dict:
  """state with its seed axis over the mesh's devices (step replicated)."""
  if mesh is None:
    return state
  seeds = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("seeds"))
  step = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  return {
    "step": jax.device_put(state["step"], step),
    "seeds": jax.tree.map(lambda x: jax.device_put(x, seeds), state["seeds"]),
  }


def make_summary(exp: tasks.Experiment, config, params_S, opt_state_S=None) -> dict:
  """Final losses per seed, λ·K*(θ) per layer for the optimizer's own K, norms;
  of the optimizer's evaluation params (schedule-free: the average x)."""
  if opt_state_S is not None:
    params_S = jax.jit(jax.vmap(lambda p, s: factory.evaluation_params(config.optimizer, p, s)))(
      params_S, opt_state_S
    )
  final = jax.device_get(jax.jit(jax.vmap(exp.evaluate))(params_S))
  return {
    "evaluated_at": factory.evaluated_at(config.optimizer),
    "final": {k: np.asarray(v).tolist() for k, v in final.items()},
    **{f"final_{k}": float(np.mean(v)) for k, v in final.items()},
    **metrics.constraint_summary(config.optimizer, params_S),
    "optimizer_state": {}
    if opt_state_S is None
    else metrics.optimizer_state_metrics(config.optimizer, opt_state_S),
  }


def train(config, workdir: Path, claim: Callable[[], None] = lambda: None) -> dict:
  """Trains (or resumes) a relu2 config in workdir; returns the summary."""
  exp = tasks.relu2_experiment(config)
  tx = factory.make_optimizer(config.optimizer, config.num_steps)
  schedule = metrics.learning_rate_schedule(config.optimizer, config.num_steps)
  mesh = seed_mesh(config.num_seeds)
  state = place(init_state(exp, tx, config), mesh)
  train_step = make_train_step(exp, tx, config.seed_chunk_size, mesh)
  manager = checkpoints.manager(workdir, config)
  resume_step, restored, data_state = checkpoints.restore_latest(manager, state)
  if resume_step:
    state = place(restored, mesh)
    checkpoints.check_data_state(resume_step, data_state, exp.iterator_state(resume_step))
    logging.info("Resumed %s from step %d.", workdir, resume_step)
  claim()  # The run starts: config.json may now be written.
  writer = metrics.MetricWriter(workdir, resume_step)
  rate = metrics.Rate()
  record = jax.jit(jax.vmap(finite.empty_record))(state["seeds"]["params"])
  if mesh is not None:
    record = jax.device_put(
      record, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("seeds"))
    )
  holder = {"state": state, "metrics": None, "record": record}

  def advance(step, last):
    holder["state"], holder["record"], holder["metrics"] = train_step(
      holder["state"], holder["record"]
    )

  def check_finite():
    checkpoints.raise_if_nonfinite(
      holder["state"]["seeds"]["first_nonfinite_step"],
      manager,
      lambda: finite.describe(holder["record"], config, config.seed),
    )

  def report(step, last):
    if not loop.due(step, config.log_every, last):
      return
    out = jax.device_get(holder["metrics"])
    check_finite()
    extra = {"learning_rate": float(schedule(step - 1))}
    state_metrics = metrics.optimizer_state_metrics(
      config.optimizer, holder["state"]["seeds"]["opt_state"]
    )
    extra.update({k: float(np.mean(v)) for k, v in state_metrics.items()})
    steps_per_sec = rate.tick(step)
    if steps_per_sec is not None:
      extra["steps_per_sec"] = steps_per_sec
    row = writer.write(step, out, extra)
    logging.info(
      "step %d/%d  train_loss %.3e (mean of %d seeds)  %.1f steps/s",
      step,
      config.num_steps,
      row["train_loss"],
      config.num_seeds,
      steps_per_sec or 0.0,
    )

  def save():
    step = int(holder["state"]["step"])
    checkpoints.save(manager, holder["state"], exp.iterator_state(step))

  with manager, writer:
    status = loop.train_loop(
      manager, holder, config.num_steps, advance, report, check_finite, save, rate.start
    )
  state = holder["state"]
  if status != loop.STATUS_FINISHED:
    return {"status": status, "step": int(state["step"])}
  summary = {
    "status": status,
    "num_steps": config.num_steps,
    "num_seeds": config.num_seeds,
    "seeds": wd.seeds(config),
    "resumed_from_step": resume_step,
    **make_summary(exp, config, state["seeds"]["params"], state["seeds"]["opt_state"]),
  }
  steps_per_sec = rate.total(int(state["step"]))
  if steps_per_sec is not None:
    summary["steps_per_sec"] = steps_per_sec
    summary["seed_steps_per_sec"] = steps_per_sec * config.num_seeds
  metrics.write_summary(workdir, summary)
  logging.info(
    "Done: final train_loss %.3e, test_loss %s; summary in %s.",
    summary.get("final_train_loss", float("nan")),
    summary.get("final_test_loss"),
    workdir / wd.SUMMARY_FILE,
  )
  return summary
