"""training.aot: (slow) the 1.5b config's train step compiled from shapes on 256 virtual CPU
devices under fsdp = 256, its per-device argument bytes equal to the sharding arithmetic done
here from jax.eval_shape and the FSDP path rule; --topology without libtpu and with --devices
are one-line errors."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import jax
import pytest

from configs.gpt2 import get_config
from training import aot as aot_lib
from training import finite, gpt2, sharding
from training.aot import vocab_size

REPO = Path(__file__).resolve().parents[1]
N = 256
# GPT-2 1.5b with its 50257-token vocabulary, AdamW, one sequence of 32 tokens per device and no
# accumulation (the cheapest compile; the batch's own bytes are counted below).
VARIANT = f"size=1.5b,optimizer=adamw,tokenizer=gpt2,batch={N},seq_len=32,accum=1"


def aot(*flags: str, timeout: int = 600) -> subprocess.CompletedProcess:
  env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
  return subprocess.run(
    [sys.executable, "-m", "training.aot", *flags],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=timeout,
  )


def nbytes(x) -> int:
  return math.prod(x.shape) * x.dtype.itemsize


def expected_bytes(config, devices: int) -> dict:
  """Per-device bytes of the step's arguments by the sharding rule, from shapes on one device:
  a parameter (and each optimizer-state leaf that mirrors it: same path suffix and shape)
  is split over ``devices`` when training.sharding.param_spec shards it, else held whole;
  step, RNG, counters and the finite-check record whole; the two batch arrays split."""
  run = gpt2.build(config, None, vocab_size=vocab_size(config))
  state = jax.eval_shape(run.init, config.seed)
  per_device, sharded_by_name = {}, {}
  for path, x in jax.tree_util.tree_flatten_with_path(state["params"])[0]:
    name = sharding.leaf_name(path)
    split = sharding.param_spec(x.shape, devices) != jax.sharding.PartitionSpec()
    sharded_by_name[name] = (tuple(x.shape), split)

  def leaf_bytes(path, x):
    name = sharding.leaf_name(path)
    for pname, (shape, split) in sharded_by_name.items():
      if (name == pname or name.endswith("/" + pname)) and tuple(x.shape) == shape:
        return nbytes(x) // devices if split else nbytes(x)
    return nbytes(x)

  def total(tree):
    return sum(leaf_bytes(p, x) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0])

  per_device["params"] = total(state["params"])
  per_device["opt_state"] = total(state["opt_state"])
  rest = {k: v for k, v in state.items() if k not in ("params", "opt_state")}
  per_device["replicated"] = sum(nbytes(x) for x in jax.tree.leaves(rest)) + sum(
    nbytes(x) for x in jax.tree.leaves(jax.eval_shape(finite.empty_record, state["params"]))
  )
  per_device["batch"] = 2 * config.batch_size * config.data.seq_len * 4 // devices  # int32
  whole = sum(nbytes(x) for x in jax.tree.leaves((state["params"], state["opt_state"])))
  per_device["ideal"] = whole / devices  # (params + optimizer state) / N
  per_device["replicated_state"] = sum(  # leaves the rule leaves whole, params and moments
    nbytes(x)
    for t in (state["params"], state["opt_state"])
    for p, x in jax.tree_util.tree_flatten_with_path(t)[0]
    if leaf_bytes(p, x) == nbytes(x)
  )
  per_device["total"] = sum(per_device[k] for k in ("params", "opt_state", "replicated", "batch"))
  return per_device


@pytest.mark.slow
def test_1_5b_on_256_devices_argument_bytes_are_the_sharding_arithmetic():
  """The 1.5b AdamW step compiled for 256 virtual devices, mesh (1, 256): XLA's per-device
  argument bytes equal, to the byte, the bytes counted here, and are within 5% of
  (params + optimizer state)/256 plus the leaves held whole. With GPT-2's 50257 x 1600
  embedding and d = 1600 (not divisible by 256) wte, c_attn and attn/c_proj stay
  replicated: 6.92 GB per device, ~95x the ideal 73 MB. About 100 s on 2 shared cores."""
  config = get_config(VARIANT)
  config.mesh.data, config.mesh.fsdp = -1, 1  # The expected bytes are counted on one device.
  want = expected_bytes(config, N)
  out = aot(
    f"--config=configs/gpt2.py:{VARIANT}",
    f"--devices={N}",
    "--config.mesh.data=1",
    f"--config.mesh.fsdp={N}",
    f"--config.eval_batch_size={N}",
    "--json",
  )
  assert out.returncode == 0, out.stderr[-3000:]
  b = json.loads(out.stdout)
  assert b["devices"] == N and b["mesh"] == {"data": 1, "fsdp": N}, b
  assert b["params"] == 1_557_611_200, b
  assert b["argument_bytes"] == b["argument_bytes_from_shardings"] == want["total"], (b, want)
  sharded_part = want["ideal"] - want["replicated_state"] / N
  bound = sharded_part + want["replicated_state"] + want["replicated"] + want["batch"]
  assert abs(b["argument_bytes"] - bound) <= 0.05 * bound, (b, want)


def test_topology_without_libtpu_is_one_line():
  try:
    import libtpu  # noqa: F401

    pytest.skip("libtpu is installed here: --topology compiles")
  except ImportError:
    pass
  out = aot("--config=configs/gpt2.py:runlocal", "--topology=v5e:16x16", timeout=120)
  assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr[-2000:]
  lines = out.stderr.strip().splitlines()
  assert len(lines) == 1 and 'pip install "jax[tpu]"' in lines[0], lines
  assert lines[0].startswith("training.aot: --topology=v5e:16x16 needs libtpu"), lines


def test_topology_and_devices_together_is_one_line():
  out = aot("--config=configs/gpt2.py:runlocal", "--topology=v5e:16x16", "--devices=8")
  assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr[-2000:]
  lines = out.stderr.strip().splitlines()
  assert len(lines) == 1 and "--devices and --topology" in lines[0], lines


def test_fsdp_options_are_the_sharding_arithmetic_and_rank_the_meshes():
  """The mesh advice on 1.5b for 256 devices, from shapes (no compile): every fsdp size's
  params + optimizer state per device equals this file's independent count; fsdp = 256 holds
  wte and the d = 1600 matrices whole, and the least per device is fsdp = 64 (1600 = 64 * 25,
  4800 and 6400 divide too: every large leaf split)."""
  config = get_config(VARIANT)
  config.mesh.data, config.mesh.fsdp = -1, 1
  run = gpt2.build(config, None, vocab_size=vocab_size(config))
  options = {o["fsdp"]: o for o in aot_lib.fsdp_options(jax.eval_shape(run.init, 0), N)}
  assert sorted(options) == [1, 2, 4, 8, 16, 32, 64, 128, 256]
  for f in (1, 64, 256):
    want = expected_bytes(config, f)
    assert options[f]["state_bytes"] == want["params"] + want["opt_state"], f
  assert options[256]["whole"][0] == {"name": "wte/embedding", "shape": [50257, 1600]}
  assert options[64]["whole_count"] == 0 and options[256]["whole_count"] > 0
  best = min(options.values(), key=lambda o: (o["state_bytes"], o["fsdp"]))
  assert (best["fsdp"], best["data"]) == (64, 4)
  advice = "\n".join(
    aot_lib.mesh_advice(
      {
        "devices": N,
        "mesh": {"data": 1, "fsdp": N},
        "fsdp_options": list(options.values()),
        "state_bytes_ideal": 1,
      }
    )
  )
  assert "--config.mesh.fsdp=64 --config.mesh.data=4" in advice, advice
  assert "wte/embedding (50257, 1600)" in advice, advice
