"""Per-device memory of GPT-2's params + optimizer state under FSDP, against the ideal 1/N.

    python benchmarks/sharding.py [--sizes=124m,1.5b] [--devices=8,256] [--optimizer=adamw] [--out=F.json]

For every (size, N) it compiles the trainer's step for N virtual CPU devices with mesh
(1, N), from shapes alone (`python -m training.aot --json` in a fresh process, since the
device count is fixed at JAX's start), and prints per device: the argument bytes (the
state and one batch), their ratio to the ideal (the whole unsharded state / N), the
temporaries (the CPU compiler's, not a TPU's) and the compile time. The replicated leaves
(LayerNorms, biases and other leaves under 2^14 elements) are why the ratio is above 1.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from absl import app, flags

from training import cli

REPO = Path(__file__).resolve().parents[1]
FLAGS = flags.FLAGS
flags.DEFINE_list("sizes", ["124m", "1.5b"], "GPT-2 sizes of configs/gpt2.py.")
flags.DEFINE_list("devices", ["8", "256"], "Virtual CPU device counts (mesh (1, N)).")
flags.DEFINE_string("optimizer", "adamw", "The optimizer of configs/gpt2.py whose state counts.")
flags.DEFINE_string("out", None, "Optional JSON file for the figures.")


def aot(size: str, devices: int, fsdp: int) -> tuple[dict, float]:
  """training.aot's JSON budget for one size on ``devices`` with mesh (devices/fsdp, fsdp)."""
  cmd = [
    sys.executable,
    "-m",
    "training.aot",
    f"--config=configs/gpt2.py:size={size},optimizer={FLAGS.optimizer},batch={devices}",
    f"--devices={devices}",
    f"--config.mesh.data={devices // fsdp}",
    f"--config.mesh.fsdp={fsdp}",
    f"--config.eval_batch_size={devices}",  # eval batches are sharded over every device too
    "--json",
  ]
  start = time.time()
  env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
  r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env)
  if r.returncode != 0:
    raise app.UsageError(f"training.aot failed for {size} on {devices}: {r.stderr[-800:]}")
  return json.loads(r.stdout[r.stdout.index("{") :]), time.time() - start


def main(argv):
  del argv
  results = []
  for size in FLAGS.sizes:
    for n in [int(d) for d in FLAGS.devices]:
      sharded, seconds = aot(size, n, n)
      replicated, _ = aot(size, n, 1)  # the same batch; the whole state on every device
      # The ideal: everything the replicated run holds, split evenly (the batch is a few KiB).
      ideal = replicated["argument_bytes"] / n
      row = {
        "size": size,
        "devices": n,
        "params": sharded["params"],
        "argument_mib": sharded["argument_bytes"] / 2**20,
        "replicated_argument_mib": replicated["argument_bytes"] / 2**20,
        "ideal_mib": ideal / 2**20,
        "ratio_to_ideal": sharded["argument_bytes"] / ideal,
        "temp_mib": sharded["temp_bytes"] / 2**20,
        "compile_s": seconds,
      }
      results.append(row)
      print(
        f"{size:>5s} on {n:3d} devices: {row['argument_mib']:9.1f} MiB of state per device "
        f"(replicated {row['replicated_argument_mib']:9.1f}, ideal 1/N {row['ideal_mib']:8.1f}: "
        f"{row['ratio_to_ideal']:.3f}x), temporaries {row['temp_mib']:8.1f} MiB, "
        f"compiled in {seconds:.0f} s"
      )
  if FLAGS.out:
    Path(FLAGS.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags("benchmarks/sharding.py"))
