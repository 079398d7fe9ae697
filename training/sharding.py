"""The ("data", "fsdp") mesh and the sharding rules for GPT-2's params, optimizer state and batch.

Why explicit rules: under Auto axis types `jit(tx.init)(sharded_params)` returns a replicated
optimizer state (zeros_like does not carry the sharding), so every state leaf is given a sharding
here. Parameters follow big_vision's path rule: a leaf of at least `min_size` elements has its
largest dimension divisible by the fsdp size sharded over "fsdp"; the rest is replicated; a
per-path override (regex on the "a/b/c" leaf name -> PartitionSpec) wins. `fsdp = 1` replicates
every parameter: plain data parallelism, today's numbers.
"""

import re

import jax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from training.errors import UserError

AXES = ("data", "fsdp")
MIN_SIZE = 2**14  # Elements below which a leaf is replicated: not worth a collective.


def mesh_shape(data: int, fsdp: int, num_devices: int) -> tuple[int, int]:
  """(data, fsdp) with one -1 filled in as "the rest"; one-line errors for sizes that don't fit."""
  if data == -1 and fsdp == -1:
    raise UserError("mesh.data and mesh.fsdp are both -1: set at most one to -1 (the rest).")
  for name, v in (("mesh.data", data), ("mesh.fsdp", fsdp)):
    if v == 0 or v < -1:
      raise UserError(f"{name}={v}: use a positive size or -1 (the rest of the devices).")
  known = (data if data != -1 else 1) * (fsdp if fsdp != -1 else 1)
  if num_devices % known:
    raise UserError(
      f"mesh ({data}, {fsdp}) does not divide the {num_devices} devices: pick sizes whose "
      "product divides the device count."
    )
  data = num_devices // known if data == -1 else data
  fsdp = num_devices // known if fsdp == -1 else fsdp
  if data * fsdp != num_devices:
    raise UserError(
      f"mesh.data * mesh.fsdp = {data * fsdp} but there are {num_devices} devices: make the "
      "product equal the device count (or set one of them to -1)."
    )
  return data, fsdp


def make_mesh(data: int = -1, fsdp: int = 1, devices=None) -> Mesh:
  """A ("data", "fsdp") mesh with Auto axis types (Explicit breaks flax.linen partitioning)."""
  devices = jax.devices() if devices is None else devices
  shape = mesh_shape(data, fsdp, len(devices))
  return jax.make_mesh(shape, AXES, axis_types=(AxisType.Auto,) * 2, devices=devices)


def leaf_name(path) -> str:
  return jax.tree_util.keystr(path, simple=True, separator="/")


def param_spec(shape, fsdp: int, min_size: int = MIN_SIZE) -> PartitionSpec:
  """Shard the largest dimension divisible by `fsdp` when the leaf has >= min_size elements."""
  size = 1
  for d in shape:
    size *= d
  if fsdp == 1 or size < min_size:
    return PartitionSpec()
  for axis in sorted(range(len(shape)), key=lambda i: -shape[i]):
    if shape[axis] % fsdp == 0:
      spec = [None] * len(shape)
      spec[axis] = "fsdp"
      return PartitionSpec(*spec)
  return PartitionSpec()


def param_shardings(params, mesh: Mesh, min_size: int = MIN_SIZE, overrides: dict | None = None):
  """A NamedSharding per parameter leaf by the path rule; `overrides` maps regex -> spec."""
  fsdp = mesh.shape["fsdp"]

  def rule(path, x):
    name = leaf_name(path)
    for pattern, spec in (overrides or {}).items():
      if re.search(pattern, name):
        return NamedSharding(mesh, PartitionSpec(*spec))
    return NamedSharding(mesh, param_spec(x.shape, fsdp, min_size))

  return jax.tree_util.tree_map_with_path(rule, params)


def state_shardings(tx, params, shardings_of_params, mesh: Mesh):
  """Shardings for tx.init(params): a state leaf gets the sharding of the parameter whose path
  its own path ends with and whose shape it has (moments mirror the params tree in every
  optimizer here, inside chains, partitions and wrappers); anything else (counts, scalars,
  stacked or reshaped buffers) is replicated."""
  by_name = param_shapes(params)
  sharding_by_name = {
    leaf_name(p): s for p, s in jax.tree_util.tree_flatten_with_path(shardings_of_params)[0]
  }
  abstract = jax.eval_shape(tx.init, params)
  replicated = NamedSharding(mesh, PartitionSpec())

  def rule(path, x):
    pname = mirrored_param(leaf_name(path), x.shape, by_name)
    return replicated if pname is None else sharding_by_name[pname]

  return jax.tree_util.tree_map_with_path(rule, abstract)


def param_shapes(params) -> dict[str, tuple]:
  """{leaf name: shape} of a params tree."""
  return {leaf_name(p): tuple(x.shape) for p, x in jax.tree_util.tree_flatten_with_path(params)[0]}


def mirrored_param(name: str, shape, by_name: dict[str, tuple]) -> str | None:
  """The parameter a state leaf ``name`` of ``shape`` mirrors (its path ends with the
  parameter's and the shapes agree), or None: `state_shardings`'s matching rule."""
  for pname, pshape in by_name.items():
    if (name == pname or name.endswith("/" + pname)) and tuple(shape) == pshape:
      return pname
  return None


def batch_sharding(mesh: Mesh, leading: int = 0) -> NamedSharding:
  """The batch axis (after `leading` unsharded axes, e.g. microbatches) over all mesh axes."""
  return NamedSharding(mesh, PartitionSpec(*([None] * leading), AXES))
