"""relu2's vmapped seeds spread over 8 virtual CPU devices: the same per-seed results
as one device, and a train step with no collective at all."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import training
from configs import relu2 as relu2_config
from tests.config_overrides import config_with

REPO = Path(__file__).resolve().parents[1]
VARIANT = "runlocal,steps=30,seeds=8,chunk=2"


@pytest.mark.slow  # a subprocess with 8 virtual devices (about 15 s)
def test_eight_devices_hold_one_seed_each_without_communication(tmp_path):
  env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
  r = subprocess.run(
    [
      sys.executable,
      str(REPO / "tests" / "relu2_seeds_check.py"),
      str(tmp_path / "eight"),
      VARIANT,
    ],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert r.returncode == 0, r.stderr[-3000:]
  eight = json.loads(r.stdout.strip().splitlines()[-1])
  assert eight["devices"] == 8
  assert not eight["collectives"]["inside_loops"] and not eight["collectives"]["outside_loops"]
  one = training.run(config_with(relu2_config.get_config, VARIANT), tmp_path / "one")
  for key, values in one["final"].items():
    np.testing.assert_allclose(eight["final"][key], values, rtol=1e-5, atol=1e-7)
