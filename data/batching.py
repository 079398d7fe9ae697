"""Minibatch order for in-memory datasets, as a pure function of (key, step).

Epoch e visits the examples in the order `permutation(fold_in(key, e), n)`,
in `n // batch_size` batches (the remainder is dropped). Because the batch of a
step is a function of the data key and the step alone, it can be computed
inside the jitted train step (no host round-trip) and vmapped over seeds (each
seed its own key, so its own order), and the iterator's whole state is the pair
(key, step): restoring both resumes the exact same data order.
"""

import jax
import jax.numpy as jnp


def is_full_batch(n: int, batch_size: int) -> bool:
  """batch_size 0 (or ≥ n) means full-batch gradient descent."""
  return batch_size <= 0 or batch_size >= n


def batch_indices(key: jax.Array, step: jax.Array, n: int, batch_size: int) -> jax.Array:
  """The (batch_size,) indices of the examples of ``step``."""
  steps_per_epoch = n // batch_size
  epoch, position = jnp.divmod(step, steps_per_epoch)
  order_N = jax.random.permutation(jax.random.fold_in(key, epoch), n)
  return jax.lax.dynamic_slice_in_dim(order_N, position * batch_size, batch_size)


def iterator_state(step: int, n: int, batch_size: int) -> dict:
  """The JSON-able state of the iterator after ``step`` steps (for checkpoints)."""
  if is_full_batch(n, batch_size):
    return {"kind": "full_batch", "step": int(step), "n": n}
  epoch, position = divmod(int(step), n // batch_size)
  return {
    "kind": "epoch_permutation",
    "step": int(step),
    "epoch": epoch,
    "position_in_epoch": position,
    "n": n,
    "batch_size": batch_size,
  }
