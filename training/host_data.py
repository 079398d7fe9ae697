"""Per-host data: which rows of the global batch this process reads, the global batch built
from every process's own rows, and the data-iterator state of every process in a checkpoint.

The batch is sharded over all mesh axes (training.gpt2_steps), so the devices of one process
hold one contiguous block of rows of every microbatch when the mesh lists each process's
devices together (jax.make_mesh does). `process_block` finds that block from the sharding
itself, the loader reads only it (data.text_pipeline's ``shard``), and `global_batch` builds
the global array with `jax.make_array_from_process_local_data`: no process holds, reads or
sends another's rows. With one process it is the whole batch and `jax.device_put`.

Iterator state: each process's grain iterator has its own state. A checkpoint keeps all of
them (``by_process``, gathered once per save), and a resumed process sets its own. The
indexed pipelines' state is the position in the step sequence, the same on every process, so
a run can also resume on a different number of processes (the layout fields may change on a
resume, training.workdir); differing states (a future streamed pipeline) refuse that in one
line.
"""

import json

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from training.errors import ConfigError


def process_block(mesh) -> tuple[int, int]:
  """(index, count): this process holds block ``index`` of ``count`` equal contiguous blocks
  of a dimension sharded over all of ``mesh``'s axes; (0, 1) with one process. Raises when
  the process's devices are not contiguous along the flattened mesh (then a process's rows
  would not be one block)."""
  count = jax.process_count()
  if count == 1:
    return 0, 1
  n = mesh.devices.size
  sharding = NamedSharding(mesh, P(tuple(mesh.axis_names)))
  starts = sorted(
    idx[0].start or 0 for idx in sharding.addressable_devices_indices_map((n,)).values()
  )
  local = len(starts)
  if n != local * count or starts != list(range(starts[0], starts[0] + local)):
    raise ConfigError(
      f"Process {jax.process_index()}'s devices sit at positions {starts} of the {n}-device "
      "mesh, not one contiguous block: the per-host batch needs each process's devices "
      "together (jax.make_mesh's order); build the mesh from jax.devices() in process order."
    )
  return starts[0] // local, count


def global_batch(local, sharding, axis: int, count: int) -> jax.Array:
  """The global batch array from this process's rows ``local`` (its block of dimension
  ``axis``, `process_block`): the global shape has ``count`` times as many rows."""
  if count == 1:
    return jax.device_put(local, sharding)
  shape = list(np.shape(local))
  shape[axis] *= count
  return jax.make_array_from_process_local_data(sharding, local, tuple(shape))


def _allgather_json(obj) -> list:
  """Every process's JSON-able ``obj``, in process order (two small host collectives)."""
  from jax.experimental import multihost_utils

  data = np.frombuffer(json.dumps(obj, sort_keys=True).encode(), np.uint8)
  sizes = multihost_utils.process_allgather(np.int32(data.size))
  padded = np.zeros(int(np.max(sizes)), np.uint8)
  padded[: data.size] = data
  rows = multihost_utils.process_allgather(padded)
  return [json.loads(bytes(r[: int(s)]).decode()) for r, s in zip(rows, np.ravel(sizes))]


def iterator_record(step: int, state: dict) -> dict:
  """The checkpoint's data-iterator JSON: the step, this process's grain state and, with
  several processes, every process's (``by_process``)."""
  record = {"step": int(step), "grain": state}
  if jax.process_count() > 1:
    record["by_process"] = _allgather_json(state)
  return record


def own_state(record: dict) -> dict:
  """This process's grain state from a checkpoint's record (`iterator_record`), also when
  the run was saved by a different number of processes and the states are all equal."""
  saved = record.get("by_process") or [record["grain"]]
  if len(saved) == jax.process_count():
    return saved[jax.process_index()]
  if all(s == saved[0] for s in saved):
    return saved[0]
  raise ConfigError(
    f"The checkpoint at step {record.get('step')} holds the data-iterator states of "
    f"{len(saved)} processes, which differ, and this run has {jax.process_count()}: resume "
    f"with {len(saved)} processes."
  )
