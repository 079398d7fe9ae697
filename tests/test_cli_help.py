"""Every command's --help lists its own flags (absl shows only the main
module's key flags; the experiment commands define theirs in experiment_cli)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
  "command,flags",
  [
    (["train.py"], ["--config", "--workdir", "--override_config"]),
    (["-m", "analysis.sweep"], ["--config", "--workdir"]),
    (["-m", "analysis.gpt2_spectra"], ["--config", "--workdir"]),
    (["-m", "analysis.nexus_mixture"], ["--config", "--workdir"]),
    (["-m", "analysis.connectivity"], ["--runs", "--path", "--points", "--align", "--out"]),
    (["-m", "training.aot"], ["--config", "--devices", "--topology", "--json"]),
  ],
)
def test_help_lists_the_commands_flags(command, flags):
  env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
  result = subprocess.run(
    [sys.executable, *command, "--help"],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=120,
  )
  # absl ends --help with exit status 1 (its usage convention); no traceback.
  assert "Traceback" not in result.stderr, result.stderr[-2000:]
  listed = [
    line.split(":")[0].strip()
    for line in result.stdout.splitlines()
    if line.strip().startswith("--")
  ]
  for flag in flags:
    assert flag in listed or f"--[no]{flag[2:]}" in listed, (flag, listed)
