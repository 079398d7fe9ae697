"""The analysis commands' one flag style: importing any analysis module defines
no absl flag (tests import them beside train.py's --config/--workdir), and
each command's --help lists its own flags (tests/test_cli_help.py checks the
experiment commands and connectivity; here the rest)."""

import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import analysis

REPO = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")


def _python(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run(
    [sys.executable, *args], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=180
  )


def test_importing_analysis_defines_no_flags():
  modules = sorted(m.name for m in pkgutil.iter_modules(analysis.__path__))
  assert {"connectivity", "constraint_demo", "sweep", "nexus_mixture"} <= set(modules)
  code = (
    "import importlib; from absl import app, flags  # absl.app defines --pdb etc.\n"
    "import training, models, data, optimizers  # their flags (if any) are not analysis'\n"
    "before = set(flags.FLAGS)\n"
    f"for m in {modules!r}: importlib.import_module('analysis.' + m)\n"
    "print(sorted(set(flags.FLAGS) - before))\n"
  )
  result = _python("-c", code)
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize(
  "module,flags",
  [
    (
      "analysis.constraint_demo",
      ["--steps", "--weight_decay", "--learning_rate", "--seed", "--out"],
    ),
    ("analysis.connectivity", ["--fit_steps", "--project", "--batch_size", "--include_self"]),
  ],
)
def test_help_lists_the_commands_own_flags(module, flags):
  result = _python("-m", module, "--help")
  assert "Traceback" not in result.stderr, result.stderr[-2000:]
  listed = {
    line.split(":")[0].strip() for line in result.stdout.splitlines() if line.startswith("  --")
  }
  assert {f for f in flags if f not in listed and f"--[no]{f[2:]}" not in listed} == set()
  assert "--helpfull" in result.stdout and "--config" not in listed


def test_unexpected_arguments_are_one_line():
  result = _python("-m", "analysis.constraint_demo", "extra")
  assert result.returncode != 0 and "Unexpected arguments ['extra']" in result.stderr
  assert "Traceback" not in result.stderr
