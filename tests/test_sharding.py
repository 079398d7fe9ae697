"""training.sharding: mesh sizes, the FSDP path rule, and (8 virtual devices, a subprocess)
param/opt-state shardings for AdamW and Muon and sharded steps equal to unsharded (< 1e-5)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from jax.sharding import PartitionSpec as P

from training import sharding
from training.errors import UserError

REPO = Path(__file__).resolve().parents[1]


def test_mesh_shape_fills_the_rest_and_rejects_bad_sizes():
  assert sharding.mesh_shape(-1, 4, 8) == (2, 4)
  assert sharding.mesh_shape(8, -1, 8) == (8, 1)
  for data, fsdp in [(3, -1), (-1, -1), (2, 2), (0, 1)]:
    with pytest.raises(UserError):
      sharding.mesh_shape(data, fsdp, 8)


def test_param_spec_shards_largest_divisible_dimension():
  assert sharding.param_spec((768, 3072), 8) == P(None, "fsdp")
  assert sharding.param_spec((50257, 768), 8) == P(None, "fsdp")
  assert sharding.param_spec((768,), 8) == P()
  assert sharding.param_spec((768, 3072), 1) == P()


def test_eight_devices_shardings_and_sharded_steps_match():
  env = dict(
    os.environ,
    PYTHONPATH=str(REPO),
    XLA_FLAGS="--xla_force_host_platform_device_count=8",
    JAX_PLATFORMS="cpu",
  )
  result = subprocess.run(
    [sys.executable, "tests/sharding_check.py"],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert "OK" in result.stdout
