"""Loss along all pairs' paths: the vmapped evaluator against a Python loop and
against the machine's plain f32 matmul rate, measured in the same run.

    python benchmarks/path_eval.py [--seeds=16] [--points=65] [--widths=64,1024] [--out=FILE.json]

Two-layer ReLU networks f(x) = relu(x·W + b)·A with the shapes of
`models.relu2` (W (d, m), b (m,), A (m, 1); d = 16), random parameters for each
of 16 seeds, n = 1024 examples, squared loss. All 120 pairs × 65 points of the
linear path at widths 64 and 1024:

- "vmapped": `analysis.evaluate.evaluate_paths`, one jitted call, chunked by
  `lax.map` (batch size "auto");
- "loop": a Python loop over (pair, t) calling a jitted single-point loss;
- "matmul": a 2048×2048 f32 matmul (2·2048³ FLOPs), the machine's plain rate,
  measured just before and just after the evaluator (mean of the two).

FLOPs of the evaluation per point: 2·n·d·m + 2·n·m (the two matmuls) + 2·n·m
(bias, ReLU) + 3·#params (interpolation); the rate is those over the time.
Targets: vmapped ≥ 10× the loop at width 64; ≥ 50% of the matmul rate at 1024.
"""

import json
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from analysis.evaluate import all_pairs, auto_batch_size, evaluate_paths, gather_pairs
from analysis.paths import get_path_fn, linear_path
from training import cli
from training.perf import matmul_rate

FLAGS = flags.FLAGS
flags.DEFINE_integer("seeds", 16, "Networks; all pairs of them are evaluated.", lower_bound=2)
flags.DEFINE_integer("points", 65, "Values of t in [0, 1] per path.", lower_bound=2)
flags.DEFINE_list("widths", ["64", "1024"], "Hidden widths m.")
flags.DEFINE_integer("input_dim", 16, "d.", lower_bound=1)
flags.DEFINE_integer("examples", 1024, "n.", lower_bound=1)
flags.DEFINE_integer("repeats", 3, "Timed runs (min is reported) after a warm-up.", lower_bound=1)
flags.DEFINE_string("out", None, "Optional JSON file for the figures.")


def squared_loss(params, batch):
  x_NxD, y_NxO = batch
  h_NxM = jax.nn.relu(x_NxD @ params["hidden"]["kernel"] + params["hidden"]["bias"])
  return 0.5 * jnp.mean(jnp.sum((h_NxM @ params["head"]["kernel"] - y_NxO) ** 2, -1))


def random_networks(seeds, d, m, key):
  """Params stacked over seeds, relu2 names and shapes, "standard" scales."""
  k1, k2, k3 = jax.random.split(key, 3)
  return {
    "hidden": {
      "kernel": jax.random.normal(k1, (seeds, d, m)) / np.sqrt(d),
      "bias": 0.1 * jax.random.normal(k2, (seeds, m)),
    },
    "head": {"kernel": jax.random.normal(k3, (seeds, m, 1)) / np.sqrt(m)},
  }


def best_time(fn, repeats):
  """Min wall time of fn() over repeats, after one warm-up (compilation) call."""
  jax.block_until_ready(fn())
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return min(times)


def loop_eval(a_P, b_P, ts, batch):
  """The baseline: one jitted single-point call per (pair, t)."""
  point_loss = jax.jit(lambda a, b, t, data: squared_loss(linear_path(a, b, t), data))
  num_pairs = jax.tree.leaves(a_P)[0].shape[0]
  # Endpoints are sliced outside the timed loop: only the calls are timed.
  a_list = [jax.tree.map(lambda x: x[p], a_P) for p in range(num_pairs)]
  b_list = [jax.tree.map(lambda x: x[p], b_P) for p in range(num_pairs)]
  ts_list = [jnp.float32(t) for t in np.asarray(ts)]

  def run():
    return jnp.stack(
      [jnp.stack([point_loss(a, b, t, batch) for t in ts_list]) for a, b in zip(a_list, b_list)]
    )

  return run


def bench_width(m, repeats):
  d, n = FLAGS.input_dim, FLAGS.examples
  key = jax.random.PRNGKey(m)
  stacked = random_networks(FLAGS.seeds, d, m, key)
  x_NxD = jax.random.normal(jax.random.fold_in(key, 1), (n, d))
  y_NxO = jax.random.normal(jax.random.fold_in(key, 2), (n, 1))
  pairs = all_pairs(FLAGS.seeds)
  a_P, b_P = gather_pairs(stacked, pairs)
  ts = jnp.linspace(0.0, 1.0, FLAGS.points)
  batch = (x_NxD, y_NxO)

  vmapped = lambda: evaluate_paths(squared_loss, "linear", a_P, b_P, ts, batch)
  # On a shared machine the rate drifts: the reference is measured right
  # before and after, and the evaluator is compared with their mean.
  rate_before = matmul_rate(repeats=repeats + 2)
  t_vmap = best_time(vmapped, repeats)
  rate = 0.5 * (rate_before + matmul_rate(repeats=repeats + 2))
  loop = loop_eval(a_P, b_P, ts, batch)
  t_loop = best_time(loop, 1)  # Slow by construction; one timed run suffices.
  diff = float(jnp.max(jnp.abs(vmapped() - loop())))

  num_points = len(pairs) * FLAGS.points
  num_params = d * m + m + m
  flops = num_points * (2 * n * d * m + 2 * n * m + 2 * n * m + 3 * num_params)
  chunk = auto_batch_size(squared_loss, get_path_fn("linear"), a_P, b_P, ts, batch)
  return {
    "width": m,
    "pairs": len(pairs),
    "points": num_points,
    "batch_size": chunk,
    "vmapped_s": t_vmap,
    "loop_s": t_loop,
    "speedup_vs_loop": t_loop / t_vmap,
    "gflops_per_s": flops / t_vmap / 1e9,
    "matmul_gflops_per_s": rate / 1e9,
    "fraction_of_matmul_rate": flops / t_vmap / rate,
    "max_abs_diff_vs_loop": diff,
  }


def main(argv):
  del argv
  if FLAGS.out:
    cli.handle("benchmarks/path_eval.py", lambda: cli.output_file(FLAGS.out))
  print(f"{platform.processor() or platform.machine()}, {jax.devices()[0].platform}")
  results = {"widths": []}
  for m in map(int, FLAGS.widths):
    row = bench_width(m, FLAGS.repeats)
    results["widths"].append(row)
    print(
      f"width {m:5d}: {row['pairs']} pairs × {FLAGS.points} t = {row['points']} points, "
      f"chunks of {row['batch_size']} | vmapped {row['vmapped_s'] * 1e3:7.1f} ms, loop "
      f"{row['loop_s'] * 1e3:7.1f} ms, speedup {row['speedup_vs_loop']:5.1f}× | "
      f"{row['gflops_per_s']:6.1f} GFLOP/s = {100 * row['fraction_of_matmul_rate']:5.1f}% "
      f"of the matmul's {row['matmul_gflops_per_s']:6.1f} | "
      f"max |vmapped − loop| {row['max_abs_diff_vs_loop']:.1e}"
    )
  if FLAGS.out:
    with open(FLAGS.out, "w") as f:
      json.dump(results, f, indent=2)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags("benchmarks/path_eval.py"))
