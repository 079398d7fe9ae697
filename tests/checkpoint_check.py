"""Run by tests/test_sharding.py in subprocesses with N virtual CPU devices (XLA_FLAGS set
before jax is imported): a GPT-2 checkpoint written on one mesh restores onto another.

    python tests/checkpoint_check.py train WORKDIR FSDP STEPS OPTIMIZER [nexus]
    python tests/checkpoint_check.py restore WORKDIR FSDP
    python tests/checkpoint_check.py shardings

train: a runlocal run to step STEPS on a (devices/FSDP, FSDP) mesh, checkpoint at the end
(resuming WORKDIR's checkpoint if there is one, whatever mesh wrote it).
restore: the newest checkpoint onto a (devices/FSDP, FSDP) mesh of this process's devices, as
the trainer resumes it: every leaf on the current mesh's sharding, the params bitwise the
saved ones. shardings: the optimizer states of AdamW, Muon and Nexus(AdamW) under fsdp = 8
mirror their params' shardings (each moment of a sharded param sharded like it).
"""

import sys
from pathlib import Path

import jax
import numpy as np
from absl import logging
from jax.sharding import PartitionSpec as P

import training
from configs.gpt2 import get_config
from training import gpt2, sharding
from training import workdir as wd

# Moments per parameter leaf: AdamW's mu and nu; Muon's mu on hidden matrices (adam's two on
# the embeddings, which default_muon_routing sends to AdamW).
MOMENTS = {"adamw": {"wte": 2, "c_fc": 2}, "muon": {"wte": 2, "c_fc": 1}}


def config_for(optimizer: str, steps: int, fsdp: int, nexus: bool = False):
  # Nexus: 8 sequences per source (3 sources), so each source's batch divides over 8 devices.
  variant = f"runlocal,optimizer={optimizer},steps={steps}" + (",nexus=True,batch=24" * nexus)
  config = get_config(variant)
  config.mesh.data, config.mesh.fsdp = -1, fsdp
  config.checkpoint_every = steps
  config.log_every = steps
  config.eval_every = steps
  config.optimizer.schedule = "constant"
  return config


def check_shardings(run, state) -> None:
  """Every restored leaf has the sharding the current mesh's rule gives it."""
  flat_state = jax.tree_util.tree_flatten_with_path(state)[0]
  flat_sh = jax.tree.leaves(run.state_sh)
  assert len(flat_state) == len(flat_sh)
  for (path, x), s in zip(flat_state, flat_sh):
    assert x.sharding.is_equivalent_to(s, x.ndim), (sharding.leaf_name(path), x.sharding, s)


def restore(workdir: Path, fsdp: int) -> None:
  config = wd.load_config(workdir)
  config.mesh.data, config.mesh.fsdp = -1, fsdp
  step, state, run = gpt2.restored_state(config, workdir)
  assert step == wd.checkpoint_steps(workdir)[-1], step
  check_shardings(run, state)
  wte = state["params"]["wte"]["embedding"]
  assert (wte.sharding.spec != P()) == (fsdp > 1), wte.sharding
  assert len(wte.sharding.device_set) == jax.device_count()
  _, saved = wd.load_params(workdir)
  restored = jax.device_get(state["params"])
  diffs = jax.tree.map(lambda a, b: float(np.max(np.abs(a - b[0]))), restored, saved)
  assert max(jax.tree.leaves(diffs)) == 0.0, diffs
  print("restored step", step, "on", jax.device_count(), "devices, fsdp", fsdp)


def moments_of(state_sh, name: str, param_sharding) -> int:
  """How many optimizer-state leaves end with param ``name`` and carry its sharding."""
  flat = jax.tree_util.tree_flatten_with_path(state_sh)[0]
  return sum(
    1 for p, s in flat if sharding.leaf_name(p).endswith("/" + name) and s == param_sharding
  )


def shardings(tmp: Path) -> None:
  names = {"wte": ("wte", "embedding"), "c_fc": ("h_0", "mlp", "c_fc", "kernel")}
  for optimizer, nexus in [("adamw", False), ("muon", False), ("adamw", True)]:
    run = gpt2.build(config_for(optimizer, 2, 8, nexus), tmp)
    params_sh = run.state_sh["params"]
    for key, keys in names.items():
      param, name = params_sh, "/".join(keys)
      for k in keys:
        param = param[k]
      assert param.spec != P(), (name, param.spec)  # sharded: the check below means something
      got = moments_of(run.state_sh["opt_state"], name, param)
      want = MOMENTS[optimizer][key]
      assert got == want, (optimizer, nexus, name, got, want)
    print("state shardings", optimizer, "nexus" if nexus else "", "ok")


if __name__ == "__main__":
  logging.set_verbosity(logging.WARNING)
  mode, args = sys.argv[1], sys.argv[2:]
  if mode == "train":
    workdir, fsdp, steps, optimizer = Path(args[0]), int(args[1]), int(args[2]), args[3]
    nexus = len(args) > 4 and args[4] == "nexus"
    # override_config: a second train call goes on from the first's checkpoint (more steps).
    summary = training.run(config_for(optimizer, steps, fsdp, nexus), workdir, True)
    assert summary["status"] == "finished" and summary["num_devices"] == jax.device_count()
    print("trained to step", steps, "resumed from", summary["resumed_from_step"])
  elif mode == "restore":
    restore(Path(args[0]), int(args[1]))
  else:
    shardings(Path(args[0]))
  print("OK")
