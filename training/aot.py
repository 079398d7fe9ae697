r"""Compiles a GPT-2 config's train step ahead of time, from shapes only, and prints what one
device would hold and compute: a memory and FLOP budget before a run is launched.

    python -m training.aot --config=configs/gpt2.py:runlocal --devices=8 --config.mesh.fsdp=8

The step is the trainer's (training.gpt2_steps.make_steps, the state sharded by the config's
mesh as training.gpt2 shards it), lowered on jax.ShapeDtypeStructs that carry the shardings
(no parameter is allocated, no data is read) and compiled. Per device it prints
XLA's memory_analysis (arguments, outputs, temporaries, aliased = donated state counted once,
total = arguments + outputs + temporaries − aliased, generated code) and cost_analysis (FLOPs,
bytes accessed) of the partitioned program, the model FLOPs per device and step for
comparison (6·N + attention per token, training.gpt2's MFU numerator) and the collectives
inside and outside while loops (training.hlo). With --devices=N the devices are N virtual CPU
devices: argument bytes are exact sharding arithmetic, temporaries are the CPU compiler's,
not a TPU's or GPU's (SCALEOUT.md). With --topology=v5e:16x16 the devices are a TPU slice's
compile-only devices (jax.experimental.topologies; needs libtpu, i.e. `pip install "jax[tpu]"`,
no TPU): the numbers are the TPU compiler's. Without either, this machine's own devices.
"""

import copy
import json
import math
import sys

import jax
from absl import app, flags
from ml_collections import config_flags

from models import gpt2 as gpt2_model
from training import cli, config_checks, finite, gpt2, hlo, sharding, tasks
from training.errors import UserError
from training.gpt2_steps import make_steps

_CONFIG = config_flags.DEFINE_config_file(
  "config",
  None,
  "GPT-2 config: configs/FILE.py[:VARIANT], e.g. configs/gpt2.py:runlocal; override any "
  "field with --config.a.b=V (the mesh: --config.mesh.data=D --config.mesh.fsdp=F).",
  lock_config=True,
)
_DEVICES = flags.DEFINE_integer(
  "devices",
  0,
  "Compile for this many virtual CPU devices (set before JAX starts; the config's batch "
  "must divide over them). 0: this machine's devices.",
)
_TOPOLOGY = flags.DEFINE_string(
  "topology",
  "",
  "Compile for a TPU topology's devices, e.g. v5e:16x16 (needs libtpu: pip install "
  '"jax[tpu]"; no TPU needed). Not with --devices.',
)
_JSON = flags.DEFINE_bool("json", False, "Print one JSON object instead of the table.")


def vocab_size(config) -> int:
  """The config's vocabulary size without reading or training on its data."""
  d = config.data
  if d.tokenizer == "bpe":
    return d.bpe_vocab_size
  if d.tokenizer == "gpt2":
    return 50257  # tiktoken's gpt2 encoding (its files may not be cached here).
  return tasks.gpt2_tokenizer(config, None).vocab_size


def abstract(tree, shardings):
  return jax.tree.map(
    lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), tree, shardings
  )


def topology_devices(name: str) -> list:
  """The compile-only devices of TPU topology ``name`` (e.g. "v5e:16x16"); a UserError
  naming the fix where libtpu is not installed."""
  from jax.experimental import topologies

  try:
    return list(topologies.get_topology_desc(name, platform="tpu").devices)
  except RuntimeError as e:
    if "TPU support not installed" in str(e):
      raise UserError(
        f'--topology={name} needs libtpu, which is not installed: pip install "jax[tpu]" '
        "(a TPU VM or any Linux machine with libtpu; no TPU needed), or use --devices=N."
      ) from None
    raise UserError(f"--topology={name}: {' '.join(str(e).split())}") from None


def compile_step(config, devices=None):
  """(compiled train step, build, its abstract arguments) of ``config`` on ``devices``
  (default: this process's), from shapes."""
  if devices is None:
    run = gpt2.build(config, None, vocab_size=vocab_size(config))
  else:  # Built on this process's devices (any mesh fits), then laid out on ``devices``.
    local = copy.deepcopy(config)
    if local.get("mesh") is not None:
      local.mesh.data, local.mesh.fsdp = -1, 1
    run = gpt2.build(local, None, vocab_size=vocab_size(config))
    mesh = config.get("mesh")
    run.mesh_config = mesh
    run.mesh = sharding.make_mesh(**(mesh.to_dict() if mesh else {}), devices=devices)
    run.state_sh = gpt2._state_sharding(
      run.init, config.seed, run.tx, run.mesh, fsdp_rule=mesh is not None
    )
  k = len(run.sources) if run.use_nexus else 0
  train_step, _, batched = make_steps(
    run.model,
    run.tx,
    run.mesh,
    config.grad_accum_steps,
    k,
    state_sharding=None if run.mesh_config is None else run.state_sh,
  )
  state = abstract(jax.eval_shape(run.init, config.seed), run.state_sh)
  replicated = jax.sharding.NamedSharding(run.mesh, jax.sharding.PartitionSpec())
  record = jax.eval_shape(finite.empty_record, state["params"])
  record = abstract(record, jax.tree.map(lambda _: replicated, record))
  a = config.grad_accum_steps
  rows = config.batch_size // (k or 1) // a
  shape = ((k,) if k else ()) + (a, rows, config.data.seq_len)
  batch = jax.ShapeDtypeStruct(shape, jax.numpy.int32, sharding=batched)
  with jax.set_mesh(run.mesh):  # As the trainer calls it: Muon's owner layout reads it.
    compiled = train_step.lower(state, record, batch, batch).compile()
  return compiled, run, (state, record, batch, batch)


def shard_bytes(tree) -> int:
  """Bytes of one device's shards of abstract arrays: the sharding arithmetic alone."""
  return sum(
    math.prod(x.sharding.shard_shape(x.shape)) * x.dtype.itemsize for x in jax.tree.leaves(tree)
  )


def fsdp_options(state, devices: int) -> list[dict]:
  """Per-device bytes of params + optimizer state under the FSDP path rule for every fsdp
  size that divides ``devices`` (data = devices/fsdp), from the abstract train state: which
  mesh shards this model best, by arithmetic alone (no compile). ``whole`` lists the largest
  parameters the rule holds whole at that size (no dimension divisible by it)."""
  by_name = sharding.param_shapes(state["params"])
  leaves = [
    (
      sharding.mirrored_param(sharding.leaf_name(p), x.shape, by_name),
      math.prod(x.shape) * x.dtype.itemsize,
    )
    for t in (state["params"], state["opt_state"])
    for p, x in jax.tree_util.tree_flatten_with_path(t)[0]
  ]
  out = []
  for f in (f for f in range(1, devices + 1) if devices % f == 0):
    split = {
      n: sharding.param_spec(shape, f) != jax.sharding.PartitionSpec()
      for n, shape in by_name.items()
    }
    held = sorted(
      (
        (n, shape)
        for n, shape in by_name.items()
        if not split[n] and math.prod(shape) >= sharding.MIN_SIZE
      ),
      key=lambda item: -math.prod(item[1]),
    )
    out.append(
      {
        "fsdp": f,
        "data": devices // f,
        "state_bytes": sum(b // f if n is not None and split[n] else b for n, b in leaves),
        "whole": [{"name": n, "shape": list(shape)} for n, shape in held[:4]],
        "whole_count": len(held),
      }
    )
  return out


def budget(config, devices=None) -> dict:
  """Per-device memory, FLOPs and collectives of config's compiled train step."""
  compiled, run, args = compile_step(config, devices)
  mem = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost  # Older jax: one per program.
  n_dev = run.mesh.size
  tokens = config.batch_size * config.data.seq_len
  if run.use_nexus:
    tokens = config.optimizer.nexus.inner_steps * tokens
  model_flops = gpt2_model.flops_per_token(run.model.config, config.data.seq_len) * tokens
  out = {
    "devices": n_dev,
    "platform": run.mesh.devices.flat[0].platform,
    "mesh": dict(run.mesh.shape),
    "params": gpt2_model.count_params(jax.eval_shape(run.init, config.seed)["params"]),
    "argument_bytes": mem.argument_size_in_bytes,
    "argument_bytes_from_shardings": shard_bytes(args),
    "output_bytes": mem.output_size_in_bytes,
    "temp_bytes": mem.temp_size_in_bytes,
    "alias_bytes": mem.alias_size_in_bytes,
    "generated_code_bytes": mem.generated_code_size_in_bytes,
    "flops": float(cost.get("flops", float("nan"))),
    "bytes_accessed": float(cost.get("bytes accessed", float("nan"))),
    "model_flops_per_device": model_flops / n_dev,
  }
  out["total_bytes"] = (
    out["argument_bytes"] + out["output_bytes"] + out["temp_bytes"] - out["alias_bytes"]
  )
  counts = hlo.collective_counts(compiled.as_text())
  out["collectives"] = {k: dict(v) for k, v in counts.items()}
  state = jax.eval_shape(run.init, config.seed)
  out["state_bytes_ideal"] = shard_bytes_ideal(state, n_dev)
  out["fsdp_options"] = fsdp_options(state, n_dev)
  return out


def shard_bytes_ideal(state, devices: int) -> int:
  """(params + optimizer state) / devices: every byte split, the 1/N ideal."""
  leaves = jax.tree.leaves((state["params"], state["opt_state"]))
  return sum(math.prod(x.shape) * x.dtype.itemsize for x in leaves) // devices


def mesh_advice(b: dict) -> list[str]:
  """Lines on the fsdp sizes: this mesh's params + optimizer state per device against the
  ideal, and the size that holds the least (the smallest such size: less FSDP traffic)."""
  mib = lambda n: f"{n / 2**20:.2f} MiB"
  options = {o["fsdp"]: o for o in b["fsdp_options"]}
  here = options.get(b["mesh"].get("fsdp", 1))
  best = min(b["fsdp_options"], key=lambda o: (o["state_bytes"], o["fsdp"]))
  lines = []
  if here is not None:
    lines.append(
      f"  params + optimizer state {mib(here['state_bytes'])} per device at fsdp={here['fsdp']} "
      f"(ideal 1/{b['devices']}: {mib(b['state_bytes_ideal'])})"
    )
    if here["whole"]:
      held = ", ".join(f"{w['name']} {tuple(w['shape'])}" for w in here["whole"])
      lines.append(
        f"  held whole at fsdp={here['fsdp']}: {here['whole_count']} leaves, e.g. {held}"
      )
  if here is None or best["state_bytes"] < here["state_bytes"]:
    lines.append(
      f"  least per device: --config.mesh.fsdp={best['fsdp']} --config.mesh.data={best['data']} "
      f"({mib(best['state_bytes'])})"
    )
  return lines


def _table(b: dict) -> str:
  mib = lambda n: f"{n / 2**20:12.2f} MiB"
  lines = [
    f"{b['params']:,} params on {b['devices']} devices, mesh {b['mesh']}; per device:",
    f"  arguments   {mib(b['argument_bytes'])}  "
    f"(shardings: {mib(b['argument_bytes_from_shardings']).strip()})",
    f"  outputs     {mib(b['output_bytes'])}",
    f"  temporaries {mib(b['temp_bytes'])}",
    f"  aliased     {mib(b['alias_bytes'])}  (donated state, counted once)",
    f"  total       {mib(b['total_bytes'])}",
    f"  code        {mib(b['generated_code_bytes'])}",
    f"  FLOPs       {b['flops']:.4g} (XLA), {b['model_flops_per_device']:.4g} (model, 6N + attn)",
    f"  bytes accessed {b['bytes_accessed']:.4g}",
    f"  collectives inside loops {b['collectives']['inside_loops'] or 0}, "
    f"outside {b['collectives']['outside_loops'] or 0}",
    *mesh_advice(b),
  ]
  return "\n".join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments {argv[1:]}; see --help.")
  config = _CONFIG.value
  if config is None:
    sys.exit("training.aot: --config=configs/FILE.py[:VARIANT] is required; see --help.")

  def run():
    if _DEVICES.value < 0:
      raise UserError(f"--devices={_DEVICES.value}: pass N > 0 virtual devices, or 0.")
    if _DEVICES.value and _TOPOLOGY.value:
      raise UserError("--devices and --topology both given: pass one (virtual CPU or TPU).")
    if _DEVICES.value:  # Before the first backend use, so it takes effect.
      jax.config.update("jax_platforms", "cpu")
      jax.config.update("jax_num_cpu_devices", _DEVICES.value)
    if config.model.name != "gpt2":
      raise UserError(f"model.name={config.model.name!r}: training.aot compiles GPT-2 configs.")
    config_checks.validate_config(config)
    devices = topology_devices(_TOPOLOGY.value) if _TOPOLOGY.value else None
    b = budget(config, devices)
    print(json.dumps(b, indent=1) if _JSON.value else _table(b))

  cli.handle("training.aot", run)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags("training.aot"))
