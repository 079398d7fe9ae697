"""The jitted GPT-2 steps: gradient accumulation, the Nexus step, evaluation.

The state is one seed's {"step", "params", "opt_state", "rng",
"first_nonfinite_step"}, replicated over a "data" mesh axis of all devices;
the batch is sharded over it.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from models import gpt2
from optimizers import microbatch
from training import finite, host_data
from training.relu2 import first_nonfinite


def make_data_mesh() -> jax.sharding.Mesh:
  """All devices on one "data" axis; Auto axis types (a sharded gather under the
  default Explicit types raises ShardingTypeError, see ARCHITECTURE.md)."""
  return jax.make_mesh((jax.device_count(),), ("data",), axis_types=(jax.sharding.AxisType.Auto,))


def make_steps(
  model: gpt2.GPT2, tx, mesh, grad_accum_steps: int, num_sources: int = 0, state_sharding=None
):
  """(train_step, eval_loss, batch sharding), jitted with shardings.

  num_sources = 0: train_step(state, record, inputs_AxBxT, targets_AxBxT) ->
  (state, record, metrics) (record: training.finite's, what went NaN first): the
  mean gradient over A microbatches of B sequences (lax.scan), one update; when
  tx's state asks for them (`optimizers.microbatch`: cross-fitted AdamW) the scan
  also outputs the A microbatch gradients, passed as tx.update(...,
  microbatch_grads=grads_A). num_sources = K ≥ 1 (tx is Nexus):
  train_step(state, record, inputs_KxAxBxT, targets_KxAxBxT) builds
  grad_fn(params, s), the mean gradient over source s's
  A microbatches, and calls tx.update(None, opt_state, params, grad_fn=grad_fn);
  Nexus's k inner steps each call it once. Its metrics are the update's norm
  only: the loss at θ is `batch_loss`, computed on logged steps (an extra
  forward pass every step would cost Nexus ~1/3 of a step).
  The state is donated: checkpoints save a host copy taken before the next step.
  eval_loss(params, inputs_LxExT, targets_LxExT) -> the mean loss of L batches.
  """
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  # state_sharding (training.sharding's FSDP rule) or replicated; the batch over all mesh axes.
  state_sh = replicated if state_sharding is None else state_sharding
  params_sh = replicated if state_sharding is None else state_sharding["params"]
  axes = tuple(mesh.axis_names) if len(mesh.axis_names) > 1 else "data"
  lead = (None,) * (2 if num_sources else 1)
  batched = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(*lead, axes))
  eval_batched = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(None, axes))
  dropout = model.config.dropout > 0

  def accumulated_grad(params, inputs_AxBxT, targets_AxBxT, step_rng, stacked=False):
    """(mean gradient, mean loss, grads_A) over the A microbatches: the scan sums
    the gradients; with ``stacked`` it also outputs each one (grads_A, a leading A
    axis: no extra pass, A gradients in memory), else grads_A is None."""

    def grad_of(i, inputs_BxT, targets_BxT):
      drop_rng = jax.random.fold_in(step_rng, i) if dropout else None
      return jax.value_and_grad(gpt2.loss_fn)(
        params, model, inputs_BxT, targets_BxT, None, drop_rng
      )

    def accumulate(grads_sum, x):
      loss, grads = grad_of(*x)
      return jax.tree.map(jnp.add, grads_sum, grads), (loss, grads if stacked else None)

    xs = (jnp.arange(grad_accum_steps), inputs_AxBxT, targets_AxBxT)
    grads_sum, (losses_A, grads_A) = jax.lax.scan(accumulate, optax.tree.zeros_like(params), xs)
    return jax.tree.map(lambda g: g / grad_accum_steps, grads_sum), losses_A.mean(), grads_A

  def finish(state, rng, params, opt_state, loss):
    step = state["step"] + 1
    first_bad = first_nonfinite(state["first_nonfinite_step"], step, loss, params)
    return {
      "step": step,
      "params": params,
      "opt_state": opt_state,
      "rng": rng,
      "first_nonfinite_step": first_bad,
    }

  def train_step(state, record, inputs_AxBxT, targets_AxBxT):
    rng, step_rng = jax.random.split(state["rng"])
    params = state["params"]
    # Cross-fitted AdamW reads each microbatch's gradient (decided from the state's types).
    stacked = microbatch.wants_microbatch_grads(state["opt_state"])
    grads, loss, grads_A = accumulated_grad(params, inputs_AxBxT, targets_AxBxT, step_rng, stacked)
    extra = {} if grads_A is None else {"microbatch_grads": grads_A}
    updates, opt_state = tx.update(grads, state["opt_state"], params, **extra)
    params = optax.apply_updates(params, updates)
    new_state = finish(state, rng, params, opt_state, loss)
    record = finite.update_record(record, new_state["step"], loss, grads, params)
    return new_state, record, {"train_loss": loss, "grad_norm": optax.tree.norm(grads)}

  def nexus_step(state, record, inputs_KxAxBxT, targets_KxAxBxT):
    rng, step_rng = jax.random.split(state["rng"])
    params = state["params"]

    def grad_fn(p, source):  # source: a traced int32 in [0, K)
      drop_rng = jax.random.fold_in(step_rng, source)
      return accumulated_grad(p, inputs_KxAxBxT[source], targets_KxAxBxT[source], drop_rng)[0]

    updates, opt_state = tx.update(None, state["opt_state"], params, grad_fn=grad_fn)
    params = optax.apply_updates(params, updates)
    new_state = finish(state, rng, params, opt_state, jnp.float32(0.0))
    # The inner gradients stay inside Nexus: the record watches the params.
    record = finite.update_record(record, new_state["step"], jnp.float32(0.0), None, params)
    return new_state, record, {"update_norm": optax.tree.norm(updates)}

  def eval_loss(params, inputs_LxExT, targets_LxExT):
    losses_L = jax.lax.map(
      lambda xy: gpt2.loss_fn(params, model, *xy), (inputs_LxExT, targets_LxExT)
    )
    return losses_L.mean()

  train_step = jax.jit(
    nexus_step if num_sources else train_step,
    in_shardings=(state_sh, replicated, batched, batched),
    out_shardings=(state_sh, replicated, replicated),
    donate_argnums=(0, 1),
  )
  eval_loss = jax.jit(
    eval_loss, in_shardings=(params_sh, eval_batched, eval_batched), out_shardings=replicated
  )
  return train_step, eval_loss, batched


def batch_loss(model: gpt2.GPT2):
  """Jitted (params, inputs_...xBxT, targets_...xBxT) -> the mean loss over all
  leading axes: the loss at θ of a step's batch (for Nexus, of all K sources)."""

  def loss(params, inputs, targets):
    b, t = inputs.shape[-2:]
    return jax.lax.map(
      lambda xy: gpt2.loss_fn(params, model, *xy),
      (inputs.reshape(-1, b, t), targets.reshape(-1, b, t)),
    ).mean()

  return jax.jit(loss)


def to_device_batch(
  batch: dict, k: int, sharding, sources=None, count: int = 1
) -> tuple[jax.Array, jax.Array]:
  """(inputs, targets) as (A, B/A, T), A = k microbatches; with ``sources`` (a
  per-source batch {name: {"inputs": (B/K, T), ...}}) stacked as (K, A, B/(K·A), T).
  ``batch`` holds this process's rows, microbatch-major (data.text_pipeline's
  ``shard``: block i of ``count`` of every microbatch): the global arrays are
  assembled from every process's own rows (training.host_data.global_batch)."""
  out = []
  for name in ("inputs", "targets"):
    if sources is None:
      x_BxT = np.asarray(batch[name], np.int32)
      x = x_BxT.reshape(k, -1, x_BxT.shape[-1])
    else:
      x = np.stack([np.asarray(batch[s][name], np.int32) for s in sources])
      x = x.reshape(len(sources), k, -1, x.shape[-1])
    out.append(host_data.global_batch(x, sharding, x.ndim - 2, count))
  return tuple(out)
