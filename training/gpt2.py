"""The GPT-2 trainer: a host-side grain iterator over a text corpus that reads
only this process's rows of every global batch (training.host_data; its state,
every process's, is checkpointed beside the train state), the batch sharded over
the mesh's axes, gradient accumulation inside the step,
per-source validation loss, tokens/s and MFU. With optimizer.nexus the
iterator yields one batch per source and the step hands Nexus a
grad_fn(params, source); every config.similarity_every steps the sources'
K×K gradient-cosine matrix goes into metrics.jsonl.
"""

import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from models import gpt2
from optimizers import factory
from training import (
  checkpoints,
  distributed,
  finite,
  host_data,
  init_from,
  loop,
  metrics,
  perf,
  sharding,
  tasks,
)
from training import workdir as wd
from training.gpt2_steps import batch_loss, make_data_mesh, make_steps, to_device_batch
from training.similarity import make_similarity


def _throughput(config, use_nexus: bool, num_sources: int) -> tuple[int, int]:
  """(tokens read per step, tokens through forward+backward per step). The
  same without Nexus; with it, batch_size·T read as K source batches of
  batch_size/K, and k·(batch_size/K)·T through forward+backward."""
  tokens = config.batch_size * config.data.seq_len
  if not use_nexus:
    return tokens, tokens
  per_source = config.batch_size // num_sources
  return tokens, config.optimizer.nexus.inner_steps * per_source * config.data.seq_len


def _seed_axis(tree):
  """One seed's tree with the leading seed axis the relu2 layout has."""
  return jax.tree.map(lambda x: x[None], tree)


def _state_sharding(init, seed: int, tx, mesh, fsdp_rule: bool = True):
  """The train state's shardings on a ("data", "fsdp") mesh: params by the FSDP path rule, the
  optimizer state like its params (training.sharding), step, RNG and counters replicated
  (everything replicated without ``fsdp_rule``: the pre-mesh configs' layout)."""
  abstract = jax.eval_shape(init, seed)
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  out = jax.tree.map(lambda _: replicated, abstract)
  if fsdp_rule:
    out["params"] = sharding.param_shardings(abstract["params"], mesh)
    out["opt_state"] = sharding.state_shardings(tx, abstract["params"], out["params"], mesh)
  return out


def _checkpoint_layout(init, seed: int, state_sh):
  """(to_checkpoint, from_checkpoint, restore target) between the train state and the
  checkpoint layout (training.checkpoints: a leading seed axis of 1), on device: each stacked
  leaf is sharded like its leaf (P(None, *spec)), so a process saves only its own shards, and
  the restore target carries the current mesh's shardings, so a checkpoint written on N
  devices restores onto M (orbax reads the shards each device needs)."""

  def stacked(s):
    return jax.sharding.NamedSharding(s.mesh, jax.sharding.PartitionSpec(None, *s.spec))

  def stack(state):
    return checkpoints.stack_seed(state, to_host=False)

  shardings = {
    "step": state_sh["step"],
    "seeds": jax.tree.map(stacked, {k: v for k, v in state_sh.items() if k != "step"}),
  }
  abstract = jax.eval_shape(stack, jax.eval_shape(init, seed))
  target = jax.tree.map(
    lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings
  )
  to_checkpoint = jax.jit(stack, out_shardings=shardings)
  from_checkpoint = jax.jit(checkpoints.unstack_seed, out_shardings=state_sh)
  return to_checkpoint, from_checkpoint, target


def _under_mesh(step, mesh):
  """step called (so traced) under jax.set_mesh(mesh): optimizers read the ambient mesh, e.g.
  Muon's owner layout (optimizers.owner_layout) under fsdp > 1."""

  def call(*args):
    with jax.set_mesh(mesh):
      return step(*args)

  return call


def build(config, workdir: Path | None, vocab_size: int | None = None) -> SimpleNamespace:
  """What a run's state needs: mesh, data, sources, model, tx, init(seed) and the state's
  shardings on this process's devices (train(), the checkpoint checks and training.aot use
  it). With ``vocab_size`` no data is read (data is None): for compiling from shapes."""
  mesh_config = config.get("mesh")
  mesh = make_data_mesh() if mesh_config is None else sharding.make_mesh(**mesh_config.to_dict())
  use_nexus = factory.nexus_enabled(config.optimizer)
  # This process's block of every global batch's rows (per-host reading).
  shard = host_data.process_block(mesh)
  data = None if vocab_size else tasks.gpt2_data(config, workdir, use_nexus, shard)
  sources = tasks.source_names(config)
  model = tasks.gpt2_model(config, vocab_size or data.tokenizer.vocab_size)
  tx = factory.make_optimizer(config.optimizer, config.num_steps, num_sources=len(sources))

  def init(seed, params=None):
    """The train state at step 0: ``params`` given (init_from) or drawn; the optimizer
    state is always tx.init of them (some rules keep a copy of the params, e.g. SF)."""
    init_key, rng = jax.random.split(jax.random.PRNGKey(seed))
    if config.get("init_seed", -1) >= 0:
      # Shared start: the parameters from init_seed, dropout and data from seed.
      init_key = jax.random.split(jax.random.PRNGKey(config.init_seed))[0]
    if params is None:
      params = gpt2.init_params(model, init_key, config.data.seq_len)
    return {
      "step": jnp.int32(0),
      "params": params,
      "opt_state": tx.init(params),
      "rng": rng,
      "first_nonfinite_step": jnp.int32(-1),
    }

  # Under Auto axis types jit(tx.init) would replicate the optimizer state: set it explicitly.
  state_sh = _state_sharding(init, config.seed, tx, mesh, fsdp_rule=mesh_config is not None)
  return SimpleNamespace(
    mesh=mesh,
    mesh_config=mesh_config,
    shard=shard,
    use_nexus=use_nexus,
    data=data,
    sources=sources,
    model=model,
    tx=tx,
    init=init,
    state_sh=state_sh,
  )


def restored_state(
  config, workdir: Path, vocab_size: int | None = None, step: int | None = None
) -> tuple[int, dict | None, SimpleNamespace]:
  """(step, state, build) of workdir's newest checkpoint (or the one at ``step``) restored
  onto config's mesh on this process's devices, as train() resumes it; (0, None, build)
  without a checkpoint. With ``vocab_size`` (the run's summary has it) no data is read:
  reading and tokenizing the corpus costs far more than restoring a small model (analysis
  restores many runs)."""
  run = build(config, workdir, vocab_size)
  _, from_checkpoint, target = _checkpoint_layout(run.init, config.seed, run.state_sh)
  with checkpoints.manager(workdir, config) as manager:
    if step is None:
      step, stacked, _ = checkpoints.restore_latest(manager, target)
    else:
      stacked, _ = checkpoints.restore(manager, target, step)
  return step, (from_checkpoint(stacked) if step else None), run


def train(config, workdir: Path, claim: Callable[[], None] = lambda: None) -> dict:
  """Trains (or resumes) a GPT-2 config in workdir; returns the summary."""
  run = build(config, workdir)
  mesh, mesh_config, use_nexus, data = run.mesh, run.mesh_config, run.use_nexus, run.data
  sources, model, tx, init, state_sh = run.sources, run.model, run.tx, run.init, run.state_sh
  schedule = metrics.learning_rate_schedule(config.optimizer, config.num_steps)
  step_loss = batch_loss(model) if use_nexus else None
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  train_step, eval_loss, batched = make_steps(
    model,
    tx,
    mesh,
    config.grad_accum_steps,
    len(sources) if use_nexus else 0,
    state_sharding=None if mesh_config is None else state_sh,
  )
  if mesh_config is not None:
    train_step = _under_mesh(train_step, mesh)
  to_checkpoint, from_checkpoint, target = _checkpoint_layout(init, config.seed, state_sh)
  iterator = iter(data.loader)
  # init_from's parameters are read (and refused in one line) before the manager exists.
  start = None if wd.checkpoint_steps(workdir) else init_from.start_params(config, init)
  manager = checkpoints.manager(workdir, config)
  resume_step, stacked, data_state = checkpoints.restore_latest(manager, target)
  if resume_step:
    checkpoints.check_data_state(resume_step, data_state, None)
    iterator.set_state(host_data.own_state(data_state))
    state = from_checkpoint(stacked)
    logging.info("Resumed %s from step %d.", workdir, resume_step)
  elif start is not None:
    state = jax.jit(lambda p: init(config.seed, p), out_shardings=state_sh)(start)
    logging.info("Started from the parameters of %s.", config.init_from)
  else:
    state = jax.jit(init, static_argnums=0, out_shardings=state_sh)(config.seed)
  claim()  # The run starts: config.json may now be written.

  n_params = gpt2.count_params(state["params"])
  flops_tok = gpt2.flops_per_token(model.config, config.data.seq_len)
  peak = perf.peak_flops(config.peak_flops)
  tokens_per_step, grad_tokens_per_step = _throughput(config, use_nexus, len(sources))
  logging.info(
    "GPT-2 %s: %d params, %.3g FLOPs/token, %d devices, %d tokens/step%s%s.",
    config.model.size,
    n_params,
    flops_tok,
    jax.device_count(),
    tokens_per_step,
    f" (Nexus: {len(sources)} sources, {config.optimizer.nexus.inner_steps} inner "
    f"steps: {grad_tokens_per_step} tokens through forward+backward)"
    if use_nexus
    else "",
    f", peak {peak:.3g} FLOP/s" if peak > 0 else "",
  )
  if run.shard[1] > 1:
    logging.info(
      "Process %d of %d reads its block %d of %d of every global batch's rows.",
      jax.process_index(),
      jax.process_count(),
      *run.shard,
    )
  eval_sharding = jax.sharding.NamedSharding(
    mesh, jax.sharding.PartitionSpec(None, tuple(mesh.axis_names))
  )

  def on_device(batches):
    return {
      n: tuple(distributed.global_array(b[k], eval_sharding) for k in ("inputs", "targets"))
      for n, b in batches.items()
    }

  val = on_device(data.val)
  similarity = (
    make_similarity(tasks.stacked_loss(model), data.val, sources)
    if config.similarity_every
    else None
  )

  # The params evaluated and reported (schedule-free optimizers: their average x).
  eval_params = jax.jit(lambda p, s: factory.evaluation_params(config.optimizer, p, s))

  def at(state):
    return eval_params(state["params"], state["opt_state"])

  def evaluate(params, batches) -> dict[str, float]:
    losses = {n: float(eval_loss(params, *b)) for n, b in batches.items()}
    if losses:
      losses["mean"] = float(np.mean(list(losses.values())))
    return losses

  rate = metrics.Rate()
  record = jax.jit(finite.empty_record, out_shardings=replicated)(state["params"])
  holder = {"state": state, "metrics": None, "last_val": {}, "record": record}
  writer = metrics.MetricWriter(workdir, resume_step)

  def advance(step, last):
    inputs, targets = to_device_batch(
      next(iterator),
      config.grad_accum_steps,
      batched,
      sources if use_nexus else None,
      count=run.shard[1],
    )
    logged = loop.due(step, config.log_every, last)
    if use_nexus and logged:  # The loss at θ of this step's K source batches.
      nexus_loss = step_loss(holder["state"]["params"], inputs, targets)
    holder["state"], holder["record"], out = train_step(
      holder["state"], holder["record"], inputs, targets
    )
    holder["metrics"] = {"train_loss": nexus_loss, **out} if use_nexus and logged else out

  def check_finite():
    bad = int(holder["state"]["first_nonfinite_step"])
    checkpoints.raise_if_nonfinite(
      np.asarray([bad]),
      manager,
      lambda: finite.describe(
        jax.tree.map(lambda x: x[None], holder["record"]), config, config.seed
      ),
    )

  def report(step, last):
    evaluated = loop.due(step, config.eval_every, last)
    measured = bool(similarity) and step % config.similarity_every == 0
    if not (loop.due(step, config.log_every, last) or evaluated or measured):
      return
    out = jax.device_get(holder["metrics"])
    check_finite()
    extra = {"learning_rate": float(schedule(step - 1))}
    state_metrics = metrics.optimizer_state_metrics(
      config.optimizer, _seed_axis(holder["state"]["opt_state"])
    )
    extra.update({k: v[0] for k, v in state_metrics.items()})
    steps_per_sec = rate.tick(step)
    if steps_per_sec is not None:
      extra.update(
        steps_per_sec=steps_per_sec,
        tokens_per_sec=steps_per_sec * tokens_per_step,
        model_flops_per_sec=steps_per_sec * grad_tokens_per_step * flops_tok,
      )
      if peak > 0:
        extra["mfu"] = extra["model_flops_per_sec"] / peak
    t_eval = time.perf_counter()
    if evaluated:
      holder["last_val"] = evaluate(at(holder["state"]), val)
      extra.update({f"val_loss/{n}": v for n, v in holder["last_val"].items()})
    if measured:
      extra.update(similarity(at(holder["state"])))
    rate.exclude(time.perf_counter() - t_eval)
    rate.tick(step)  # The next rate starts after the evaluation.
    row = writer.write(step, {k: np.asarray([v]) for k, v in out.items()}, extra)
    last_val = holder["last_val"]
    logging.info(
      "step %d/%d  train_loss %.4f%s  %.0f tokens/s",
      step,
      config.num_steps,
      row.get("train_loss", float("nan")),
      f"  val_loss {last_val['mean']:.4f}" if evaluated and last_val else "",
      extra.get("tokens_per_sec", 0.0),
    )

  def save():
    stacked = to_checkpoint(holder["state"])
    record = host_data.iterator_record(int(stacked["step"]), iterator.get_state())
    checkpoints.save(manager, stacked, record)

  with manager, writer:
    status = loop.train_loop(
      manager, holder, config.num_steps, advance, report, check_finite, save, rate.start
    )
  state = holder["state"]
  if status != loop.STATUS_FINISHED:
    return {"status": status, "step": int(state["step"])}
  # The last step always evaluates; a rerun of a finished run evaluates here.
  final_params = at(state)
  final_val = holder["last_val"] or evaluate(final_params, val)
  final_ood = evaluate(final_params, on_device(data.ood))
  params_S = jax.tree.map(lambda x: np.asarray(x)[None], distributed.to_host(final_params))
  summary = {
    "status": status,
    "num_steps": config.num_steps,
    "num_seeds": 1,
    "seeds": wd.seeds(config),
    "resumed_from_step": resume_step,
    "num_params": n_params,
    "flops_per_token": flops_tok,
    "num_devices": jax.device_count(),
    "tokenizer": data.tokenizer.name,
    "vocab_size": data.tokenizer.vocab_size,
    "final_val_loss": final_val,
    "final_ood_loss": final_ood,
    "final_val_loss_mean": final_val.get("mean"),
    "tokens_per_step": tokens_per_step,
    "grad_tokens_per_step": grad_tokens_per_step,
    "nexus": use_nexus,
    "evaluated_at": factory.evaluated_at(config.optimizer),
    **metrics.constraint_summary(config.optimizer, params_S),
    "optimizer_state": metrics.optimizer_state_metrics(
      config.optimizer, _seed_axis(state["opt_state"])
    ),
  }
  if similarity:
    final_sim = similarity(final_params)
    summary.update(
      final_grad_cosine=final_sim["grad_cosine"],
      final_grad_cosine_mean_pairwise=final_sim["grad_cosine/mean_pairwise"],
    )
  steps_per_sec = rate.total(int(state["step"]))
  if steps_per_sec is not None:
    summary.update(
      steps_per_sec=steps_per_sec,
      tokens_per_sec=steps_per_sec * tokens_per_step,
      model_flops_per_sec=steps_per_sec * grad_tokens_per_step * flops_tok,
      eval_seconds=rate.excluded,
    )
    if peak > 0:
      summary.update(peak_flops=peak, mfu=summary["model_flops_per_sec"] / peak)
  metrics.write_summary(workdir, summary)
  logging.info(
    "Done: validation loss %s, OOD loss %s, %.0f tokens/s; summary in %s.",
    final_val,
    final_ood,
    summary.get("tokens_per_sec", 0.0),
    workdir / wd.SUMMARY_FILE,
  )
  return summary
