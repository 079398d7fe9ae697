"""The Nexus mixture experiment's runs: which arms, their train.py commands and
the config fields a finished run must have to be reused (analysis.nexus_mixture
trains and measures them).

Arms (config.arms, '+'-separated): OPT (an optimizer of configs/gpt2.py),
nexus_OPT (Nexus around it, γ = config.inner_learning_rate, k =
config.inner_steps) and nexuscontrol_OPT (the control arm of
optimizers/nexus.py, config.control: Nexus's pseudo-gradient norm, no
alignment pressure). The γ × k grid (config.grid) adds nexus_OPT_gγ_kk for
every other (γ, k) of the grid and every base OPT in config.grid.bases. All
arms read the same tokens per step, so every run has the same token budget.
"""

import dataclasses
from pathlib import Path

from analysis import train_runs
from training import tasks
from training.errors import UserError

NEXUS_PREFIX = "nexus_"  # arm "nexus_OPT" is Nexus(OPT)
CONTROL_PREFIX = "nexuscontrol_"  # arm "nexuscontrol_OPT" is the control arm around OPT
KINDS = ("base", "nexus", "control")


@dataclasses.dataclass(frozen=True)
class Arm:
  name: str  # the run directories are DIR/runs/NAME_sSEED
  optimizer: str  # the base (outer) optimizer
  kind: str  # one of KINDS
  inner_learning_rate: float | None = None  # γ (Nexus and control arms)
  inner_steps: int | None = None  # k
  control: str = "none"  # optimizer.nexus.control
  grid: bool = False  # an extra point of the γ × k grid


def parse_arm(arm: str) -> tuple[str, str]:
  """ "nexuscontrol_muon" -> ("muon", "control"); "nexus_muon" -> ("muon", "nexus");
  "adamw" -> ("adamw", "base")."""
  for prefix, kind in ((CONTROL_PREFIX, "control"), (NEXUS_PREFIX, "nexus")):
    if arm.startswith(prefix):
      return arm[len(prefix) :], kind
  return arm, "base"


def _floats(text: str, field: str) -> list[float]:
  try:
    return [float(x) for x in tasks.plus_list(text)]
  except ValueError:
    raise UserError(f"config.{field}={text!r} is not '+'-separated numbers.") from None


def grid_points(config) -> list[tuple[float, int]]:
  """The (γ, k) of the grid, the main point (config.inner_learning_rate,
  config.inner_steps) included (it is the nexus_OPT arm)."""
  gammas = _floats(config.grid.inner_learning_rates, "grid.inner_learning_rates")
  steps = _floats(config.grid.inner_steps, "grid.inner_steps")
  if any(g <= 0 for g in gammas) or any(k < 1 or k != int(k) for k in steps):
    raise UserError(
      f"config.grid: inner_learning_rates {config.grid.inner_learning_rates!r} must be > 0 "
      f"and inner_steps {config.grid.inner_steps!r} integers >= 1."
    )
  main = (config.inner_learning_rate, config.inner_steps)
  points = [main] + [(g, int(k)) for g in gammas for k in steps]
  return list(dict.fromkeys(points))


def arms(config) -> list[Arm]:
  """Every arm of the experiment (module docstring), in config.arms order, then the grid."""
  names = tasks.plus_list(config.arms)
  if not names:
    raise UserError("config.arms is empty; give e.g. adamw+nexus_adamw.")
  if len(set(names)) != len(names):
    raise UserError(f"config.arms={config.arms!r} names an arm twice; name each once.")
  gamma, k = config.inner_learning_rate, config.inner_steps
  out = []
  for name in names:
    optimizer, kind = parse_arm(name)
    if kind == "base":
      out.append(Arm(name, optimizer, kind))
    else:
      control = config.control if kind == "control" else "none"
      out.append(Arm(name, optimizer, kind, gamma, k, control))
  for base in tasks.plus_list(config.grid.bases):
    if base not in names:
      raise UserError(
        f"config.grid.bases names {base!r}, which is not in config.arms={config.arms!r}: "
        "a grid point is compared with its base arm; add it or drop it from grid.bases."
      )
    for g, kk in grid_points(config)[1:]:
      out.append(Arm(f"{NEXUS_PREFIX}{base}_g{g:g}_k{kk}", base, "nexus", g, kk, grid=True))
  return out


def seeds(config) -> list[int]:
  try:
    out = [int(s) for s in tasks.plus_list(config.seeds)]
  except ValueError:
    raise UserError(f"config.seeds={config.seeds!r} is not '+'-separated integers.") from None
  if not out:
    raise UserError("config.seeds is empty; give e.g. 0+1+2.")
  return out


def arms_and_seeds(config) -> tuple[list[Arm], list[int]]:
  out = arms(config), seeds(config)
  if config.batch % 3:
    raise UserError(
      f"config.batch={config.batch} must be a multiple of the 3 sources "
      "(Nexus reads batch/3 sequences of each)."
    )
  return out


def train_command(config, arm: Arm, seed: int, run_dir: Path) -> list[str]:
  variant = (
    f"size={config.size},optimizer={arm.optimizer},steps={config.steps},"
    f"batch={config.batch},seq_len={config.seq_len},"
    f"similarity={config.similarity_every}"
    + (
      f",nexus,inner_lr={arm.inner_learning_rate},inner_steps={arm.inner_steps}"
      if arm.kind != "base"
      else ""
    )
    + (",runlocal" if config.runlocal else "")
  )
  control = [f"--config.optimizer.nexus.control={arm.control}"] if arm.kind == "control" else []
  return (
    train_runs.train_py_command(
      "configs/gpt2.py", variant, run_dir, [f"--config.seed={seed}", *control]
    )
    + config.train_flags.split()
  )


def expected_fields(config, arm: Arm, seed: int) -> dict:
  """The config.json fields a finished run of (arm, seed) must have to be reused."""
  out = {
    "seed": seed,
    "num_steps": config.steps,
    "batch_size": config.batch,
    "data.seq_len": config.seq_len,
    "model.size": config.size,
    "optimizer.name": arm.optimizer,
    "optimizer.nexus.enabled": arm.kind != "base",
  }
  if arm.kind != "base":
    out["optimizer.nexus.inner_learning_rate"] = arm.inner_learning_rate
    out["optimizer.nexus.inner_steps"] = arm.inner_steps
  if arm.kind == "control":  # Nexus runs from before the control field have none.
    out["optimizer.nexus.control"] = arm.control
  return out


def run_commands(config, workdir: Path) -> dict[tuple[str, int], tuple[Arm, Path, list[str]]]:
  """{(arm name, seed): (arm, run dir, train.py command)} of every run."""
  arm_list, seed_list = arms_and_seeds(config)
  out = {}
  for a in arm_list:
    for s in seed_list:
      d = workdir / "runs" / f"{a.name}_s{s}"
      out[(a.name, s)] = (a, d, train_command(config, a, s, d))
  return out


def arm_table(config) -> dict[str, dict]:
  """{arm name: its fields}: what the report reads to pair and place the arms."""
  return {a.name: dataclasses.asdict(a) for a in arms(config)}
