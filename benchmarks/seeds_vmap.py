r"""Time per seed-step of the vmapped relu2 trainer for S = 1, 8, 64 seeds.

    python benchmarks/seeds_vmap.py [--width=256] [--steps=500] [--optimizer=adamw] \
        [--seeds=1,8,64] [--chunks=0,8] [--out=seeds_vmap.json]

Each S runs `train.py` as it is used (full-batch relu2 default task, width
256), in a fresh subprocess and a temporary workdir, logging and checkpointing
only at the end; the time is the trainer's own steady-state steps/s (from the
end of the first, compiling, step to the end). Target: with S = 64 each seed
costs <= 1/16 of the S = 1 step, i.e. ratio <= 0.0625.

Each S is timed for each seed_chunk_size in --chunks: 0 vmaps all seeds at
once (the accelerator setting); 8 runs chunks of 8 vmapped seeds in a loop
inside the step (the CPU setting; see training.relu2.make_train_step).
"""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from absl import app, flags

from training import cli

REPO = Path(__file__).resolve().parents[1]
_WIDTH = flags.DEFINE_integer("width", 256, "Hidden width of the relu2 network.", lower_bound=1)
_STEPS = flags.DEFINE_integer("steps", 500, "Training steps per run.", lower_bound=1)
_OPTIMIZER = flags.DEFINE_string("optimizer", "adamw", "Optimizer config variant.")
_SEEDS = flags.DEFINE_list("seeds", ["1", "8", "64"], "The numbers of seeds S to time.")
_CHUNKS = flags.DEFINE_list("chunks", ["0", "8"], "config.seed_chunk_size values to time.")
_OUT = flags.DEFINE_string("out", None, "Also write the results as JSON here.")


def time_run(num_seeds: int, chunk: int) -> float:
  """Seconds per step (all seeds) of one train.py run."""
  with tempfile.TemporaryDirectory() as workdir:
    steps = _STEPS.value
    subprocess.run(
      [
        sys.executable,
        "train.py",
        f"--config=configs/relu2.py:optimizer={_OPTIMIZER.value},width={_WIDTH.value},"
        f"seeds={num_seeds},steps={steps}",
        f"--config.seed_chunk_size={chunk}",
        f"--config.log_every={steps}",
        f"--config.checkpoint_every={steps}",
        f"--workdir={workdir}",
      ],
      cwd=REPO,
      env=dict(os.environ, PYTHONPATH=str(REPO)),
      check=True,
      stdout=subprocess.DEVNULL,
      stderr=subprocess.DEVNULL,
    )
    summary = json.loads((Path(workdir) / "summary.json").read_text())
  return 1.0 / summary["steps_per_sec"]


def main(argv):
  del argv
  if _OUT.value:
    cli.handle("benchmarks/seeds_vmap.py", lambda: cli.output_file(_OUT.value))
  import jax  # Only to report the device the subprocesses use.

  results = {
    "device": str(jax.devices()[0]),
    "width": _WIDTH.value,
    "optimizer": _OPTIMIZER.value,
    "steps": _STEPS.value,
    "runs": [],
  }
  print(
    f"relu2 width {_WIDTH.value}, {_OPTIMIZER.value}, {_STEPS.value} steps, "
    f"device {results['device']}"
  )
  for chunk in map(int, _CHUNKS.value):
    print(f"seed_chunk_size={chunk} ({'all seeds vmapped' if not chunk else 'chunks'})")
    print(f"{'S':>4} {'step ms':>9} {'per seed-step us':>17} {'ratio to S=1':>13}")
    base, runs = None, []
    for num_seeds in map(int, _SEEDS.value):
      step_s = time_run(num_seeds, chunk)
      per_seed = step_s / num_seeds
      base = base or per_seed
      runs.append(
        {
          "num_seeds": num_seeds,
          "seed_chunk_size": chunk,
          "step_s": step_s,
          "seed_step_s": per_seed,
          "ratio_to_first": per_seed / base,
        }
      )
      print(
        f"{num_seeds:>4} {1e3 * step_s:>9.3f} {1e6 * per_seed:>17.2f} {per_seed / base:>13.4f}",
        flush=True,
      )
    print(
      f"  S={runs[-1]['num_seeds']}: each seed costs 1/{1 / runs[-1]['ratio_to_first']:.1f}"
      f" of the S={runs[0]['num_seeds']} step (target: 1/16 or less)."
    )
    results["runs"] += runs
  if _OUT.value:
    Path(_OUT.value).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags("benchmarks/seeds_vmap.py"))
