"""Step time of our Muon against optax.contrib.muon and optax.adamw on a
GPT-2-124M-shaped parameter tree, beside the machine's plain f32 matmul rate.

    python benchmarks/optimizer_step.py [--repeats=3] [--layers=12] [--zoo=NAME,...] [--out=FILE.json]

Both Muons get the same coefficients (quintic), 5 steps, Nesterov and routing
(the block matrices; embeddings, LayerNorms and biases to AdamW). Each step is
`update` + `apply_updates` under one jit with donated buffers, on a fixed
random gradient. Orthogonality: both implementations orthogonalize the same
matrices; we print the largest |σ − 1| band edges of each, and how far the two
outputs are apart. With pion in --zoo, Pion is also timed on its matrices alone, in turns
with the matmul (its share of the matmul rate at XLA's FLOP count of the step and at the
issue's 6·out·in·(in + out)), and its products alone (the ceiling without elementwise work).
"""

import json
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags
from optax.contrib import MuonDimensionNumbers

from configs.common import optimizer_config
from optimizers import factory, muon, newton_schulz
from optimizers.muon import default_muon_routing
from optimizers.orthogonalization import matrix_flops_per_step
from optimizers.pion import scale_by_pion
from training import cli
from training.perf import matmul_rate

FLAGS = flags.FLAGS
flags.DEFINE_integer(
  "repeats", 3, "Timed steps per optimizer (after one warm-up step).", lower_bound=1
)
flags.DEFINE_integer(
  "layers", 12, "Transformer blocks in the tree (GPT-2 124M has 12).", lower_bound=1
)
flags.DEFINE_string("out", None, "Optional JSON file for the figures.")
# The zoo members timed, with the settings that keep them matmul-only ("optimizer": the
# factory name when the entry's name is not one; "gap_every" steps are timed together).
ZOO_SETTINGS = {
  "polargrad": {"method": "newton_schulz"},
  "kaon": {},
  "freon": {"method": "newton"},
  "normuon": {},
  "sf_normuon": {},
  "mimuon": {"gap": "estimate"},
  "mimuon_gap_every_10": {"optimizer": "mimuon", "gap": "estimate", "gap_every": 10},
  "dion": {"rank": 0.25},
  "pion": {},
  "scion": {},
  "symmetric": {},
}
flags.DEFINE_list(
  "zoo",
  list(ZOO_SETTINGS),
  "Zoo optimizers to time beside Muon (config defaults of configs/common.py, the "
  "matmul-only variants: PolarGrad and Freon without SVD, MiMuon's estimated gap (every step, "
  "and every 10th), Dion at d/4).",
)

D, VOCAB, CTX = 768, 50257, 1024


def gpt2_124m_tree(n_layer):
  """Zeros with GPT-2 124M's shapes (flax layout: kernels are (fan_in, fan_out))."""
  z = lambda *s: jnp.zeros(s, jnp.float32)
  block = lambda: {
    "ln_1": {"scale": z(D), "bias": z(D)},
    "ln_2": {"scale": z(D), "bias": z(D)},
    "attn": {
      "c_attn": {"kernel": z(D, 3 * D), "bias": z(3 * D)},
      "c_proj": {"kernel": z(D, D), "bias": z(D)},
    },
    "mlp": {
      "c_fc": {"kernel": z(D, 4 * D), "bias": z(4 * D)},
      "c_proj": {"kernel": z(4 * D, D), "bias": z(D)},
    },
  }
  return {
    "wte": {"embedding": z(VOCAB, D)},
    "wpe": {"embedding": z(CTX, D)},
    **{f"h_{i}": block() for i in range(n_layer)},
    "ln_f": {"scale": z(D), "bias": z(D)},
  }


def random_like(tree, seed):
  leaves, treedef = jax.tree.flatten(tree)
  keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
  return treedef.unflatten(
    [jax.random.normal(k, leaf.shape, leaf.dtype) * 0.02 for k, leaf in zip(keys, leaves)]
  )


def time_step(opt, params, grads, repeats, period=1):
  """Seconds per jitted update+apply step (min over repeats of the mean over ``period``
  consecutive steps: a rule that does extra work every period-th step is timed with it) and
  compile time."""
  state = opt.init(params)

  def step(params, state, grads):
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  step = jax.jit(step, donate_argnums=(0, 1))
  t0 = time.perf_counter()
  params, state = jax.block_until_ready(step(params, state, grads))
  compile_and_first = time.perf_counter() - t0
  times = []
  for _ in range(period - 1):  # The steps until the next period starts: not timed.
    params, state = jax.block_until_ready(step(params, state, grads))
  for _ in range(repeats):
    t0 = time.perf_counter()
    for _ in range(period):
      params, state = jax.block_until_ready(step(params, state, grads))
    times.append((time.perf_counter() - t0) / period)
  return min(times), compile_and_first


def pion_products(matrices, repeats):
  """Seconds for Pion's matrix products alone on these (out, in) shapes, in one jit: per
  matrix the two generators' products (WᵀG, GWᵀ), W·B_in and B_out·W, and the degree-2
  series' two products on the larger side and two on the smaller after it (3·max + 4·min,
  as `optimizers.pion._rotate`). No elementwise work: the ceiling of Pion's step on this
  machine's GEMM at these shapes, and their FLOPs."""
  keys = iter(jax.random.split(jax.random.PRNGKey(1), 4 * len(matrices)))
  args = [
    [jax.random.normal(next(keys), s) for s in ((o, i), (o, i), (i, i), (o, o))]
    for o, i in matrices
  ]

  def products(args):
    out = []
    for w, g, b_in, b_out in args:
      wb, bw = w @ b_in, b_out @ w
      out += [w.T @ g, g @ w.T, wb, bw]
      if w.shape[0] < w.shape[1]:  # In side first (reuses wb), then the out side.
        w2 = w + wb @ b_in
        out += [w2, b_out @ w2, b_out @ (b_out @ w2)]
      else:
        w2 = w + b_out @ bw
        out += [w2, w2 @ b_in, (w2 @ b_in) @ b_in]
    return out

  flops = sum(2 * (3 * o * i * max(o, i) + 4 * o * i * min(o, i)) for o, i in matrices)
  step = jax.jit(products)
  jax.block_until_ready(step(args))
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(step(args))
    times.append(time.perf_counter() - t0)
  return min(times), flops


def pion_alone(params, labels, repeats):
  """Pion on its matrices alone (the AdamW leaves left out, as in torch_zoo.py), timed in
  turns with the 768×3072×768 matmul so both see the same machine (this VM's speed drifts
  by ±10% within minutes): per round one step and the best of 3 matmuls. Returns the step
  seconds (min), the step's FLOPs as XLA counts them (products and elementwise work), and
  the share of the matmul rate per round (FLOPs/step time over that round's matmul rate)."""
  mats = [x for x, m in zip(jax.tree.leaves(params), jax.tree.leaves(labels)) if m]
  grads = random_like(mats, seed=2)
  opt = scale_by_pion(1e-2)  # configs/common.py's defaults.

  def step(params, state, grads):
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  params, state = jax.tree.map(jnp.copy, mats), opt.init(mats)
  step = jax.jit(step, donate_argnums=(0, 1))
  cost = step.lower(params, state, grads).compile().cost_analysis()
  flops = float((cost[0] if isinstance(cost, list) else cost)["flops"])
  params, state = jax.block_until_ready(step(params, state, grads))
  times, shares = [], []
  for _ in range(max(repeats, 5)):
    rate = matmul_rate(768, 3072, 768, repeats=3)
    t0 = time.perf_counter()
    params, state = jax.block_until_ready(step(params, state, grads))
    times.append(time.perf_counter() - t0)
    shares.append(flops / times[-1] / rate)
  return min(times), flops, shares


def orthogonality(n_layer):
  """Singular-value range of both implementations on the same momentum-like
  matrices, and their largest elementwise difference."""
  from optax.contrib._muon import orthogonalize_via_newton_schulz

  coeffs = jnp.asarray((3.4445, -4.7750, 2.0315))
  rows = {}
  for shape in [(D, 3 * D), (D, D), (D, 4 * D), (4 * D, D)]:
    g = jax.random.normal(jax.random.PRNGKey(sum(shape)), shape)
    ours = np.asarray(jax.jit(newton_schulz)(g), np.float64)
    theirs = np.asarray(
      jax.jit(lambda x: orthogonalize_via_newton_schulz(x, coeffs, 5))(g), np.float64
    )
    s_ours = np.linalg.svd(ours, compute_uv=False)
    s_theirs = np.linalg.svd(theirs, compute_uv=False)
    rows["x".join(map(str, shape))] = {
      "ours_sigma_min_max": [float(s_ours.min()), float(s_ours.max())],
      "optax_sigma_min_max": [float(s_theirs.min()), float(s_theirs.max())],
      "max_abs_diff": float(np.abs(ours - theirs).max()),
    }
  return rows


def main(argv):
  del argv
  if FLAGS.out:
    cli.handle("benchmarks/optimizer_step.py", lambda: cli.output_file(FLAGS.out))
  params = gpt2_124m_tree(FLAGS.layers)
  grads = random_like(params, seed=0)
  n_params = sum(x.size for x in jax.tree.leaves(params))
  labels = jax.tree_util.tree_map_with_path(default_muon_routing, params)
  dims = jax.tree.map(lambda is_muon: MuonDimensionNumbers() if is_muon else None, labels)
  ns_flops = sum(
    matrix_flops_per_step(x.shape, 5)
    for x, m in zip(jax.tree.leaves(params), jax.tree.leaves(labels))
    if m
  )
  std_flops = sum(
    matrix_flops_per_step(x.shape, 5, gram=False)
    for x, m in zip(jax.tree.leaves(params), jax.tree.leaves(labels))
    if m
  )
  rate = matmul_rate(768, 3072, 768)  # The shapes of GPT-2's MLP matrices.
  print(
    f"{n_params / 1e6:.1f}M parameters; Muon on {sum(jax.tree.leaves(labels))} matrices; "
    f"plain f32 matmul {rate / 1e9:.0f} GFLOP/s"
  )
  print(
    f"Newton-Schulz FLOPs per step: standard {std_flops / 1e12:.3f} TFLOP "
    f"(ideal {std_flops / rate:.2f} s), ours {ns_flops / 1e12:.3f} TFLOP "
    f"(ideal {ns_flops / rate:.2f} s)"
  )

  optimizers = {
    "optiscape.muon": muon(0.02, weight_decay=0.01),
    "optax.contrib.muon": optax.contrib.muon(
      0.02,
      ns_coeffs=(3.4445, -4.7750, 2.0315),
      ns_steps=5,
      weight_decay=0.01,
      adam_b2=0.95,
      muon_weight_dimension_numbers=dims,
    ),
    "optax.adamw": optax.adamw(0.001, weight_decay=0.01),
  }
  for name in FLAGS.zoo:
    if name not in ZOO_SETTINGS:
      raise app.UsageError(f"--zoo: unknown {name!r}; known: {sorted(ZOO_SETTINGS)}.")
    settings = dict(ZOO_SETTINGS[name])
    base = settings.pop("optimizer", name)
    section = dict(optimizer_config(base, weight_decay=0.01), **settings)
    optimizers[name] = factory.make_optimizer(section, num_steps=1000)
  results = {
    "machine": f"{platform.processor() or platform.machine()}, "
    f"{jax.device_count()}x {jax.devices()[0].device_kind}",
    "jax": jax.__version__,
    "optax": optax.__version__,
    "n_params": n_params,
    "matmul_gflops": rate / 1e9,
    "ns_tflop_standard": std_flops / 1e12,
    "ns_tflop_ours": ns_flops / 1e12,
    "step_s": {},
    "compile_s": {},
  }
  for name, opt in optimizers.items():
    period = ZOO_SETTINGS.get(name, {}).get("gap_every", 1)
    step_s, compile_s = time_step(opt, jax.tree.map(jnp.copy, params), grads, FLAGS.repeats, period)
    results["step_s"][name] = step_s
    results["compile_s"][name] = compile_s
    print(f"{name:20s} {step_s:7.3f} s/step   (compile + first step {compile_s:.1f} s)")
  ours, theirs = results["step_s"]["optiscape.muon"], results["step_s"]["optax.contrib.muon"]
  results["ratio_ours_over_optax_muon"] = ours / theirs
  results["ratio_ours_over_adamw"] = ours / results["step_s"]["optax.adamw"]
  results["ns_gflops_ours"] = ns_flops / ours / 1e9
  results["ns_gflops_optax"] = std_flops / theirs / 1e9
  results["zoo_ratio_to_muon"] = {n: results["step_s"][n] / ours for n in FLAGS.zoo}
  results["zoo_ratio_to_adamw"] = {
    n: results["step_s"][n] / results["step_s"]["optax.adamw"] for n in FLAGS.zoo
  }
  for n in FLAGS.zoo:
    print(
      f"{n:12s} / optiscape.muon = {results['zoo_ratio_to_muon'][n]:.2f}   "
      f"/ optax.adamw = {results['zoo_ratio_to_adamw'][n]:.2f}"
    )
  if "pion" in FLAGS.zoo:
    # Pion's own work: per matrix (out × in) the two generators, W·Â_in and Â_out·W
    # (computed once, reused for the RMS scale), and the degree-2 exponentials on
    # both sides: about 6·out·in·(in + out) FLOPs (issue 13).
    # Kernels are (in, out): the paper's W is (out, in).
    matrices = [
      x.shape[::-1] for x, m in zip(jax.tree.leaves(params), jax.tree.leaves(labels)) if m
    ]
    pion_flops = sum(6 * o * i * (i + o) for o, i in matrices)
    rate_pion = pion_flops / results["step_s"]["pion"]
    products_s, products_flops = pion_products(matrices, FLAGS.repeats)
    results["pion"] = {
      "tflop_per_step": pion_flops / 1e12,
      "gflops": rate_pion / 1e9,
      "share_of_matmul_rate": rate_pion / rate,
      "flops_over_muon_ns": pion_flops / ns_flops,
      "products_only_s": products_s,
      "products_only_tflop": products_flops / 1e12,
      "products_only_share_of_matmul_rate": products_flops / products_s / rate,
      "step_over_products_only": results["step_s"]["pion"] / products_s,
    }
    print(
      f"pion: {pion_flops / 1e12:.3f} TFLOP/step ({pion_flops / ns_flops:.2f}x our Muon's "
      f"Newton-Schulz), {rate_pion / 1e9:.0f} GFLOP/s = {rate_pion / rate:.0%} of the matmul "
      "rate (whole step time: a lower bound; target >= 80%)"
    )
    alone_s, alone_flops, shares = pion_alone(params, labels, FLAGS.repeats)
    issue_shares = [x * pion_flops / alone_flops for x in shares]
    results["pion"] |= {
      "matrices_alone_s": alone_s,
      "matrices_alone_xla_tflop": alone_flops / 1e12,
      "matrices_alone_share_per_round": shares,
      "matrices_alone_share_at_issue_flops_per_round": issue_shares,
    }
    print(
      f"pion on its {len(matrices)} matrices alone (no AdamW leaves), in turns with the matmul: "
      f"{alone_s:.3f} s/step, {alone_flops / 1e12:.3f} TFLOP as XLA counts them = "
      f"{np.median(shares):.0%} of the matmul rate (median of {len(shares)} rounds, "
      f"{min(shares):.0%}-{max(shares):.0%}; target >= 80%); at the issue's "
      f"6*out*in*(in+out): {np.median(issue_shares):.0%}"
    )
    print(
      f"pion's products alone ({products_flops / 1e12:.3f} TFLOP, no elementwise work): "
      f"{products_s:.3f} s = {products_flops / products_s / rate:.0%} of the matmul rate; "
      f"the whole step takes {results['step_s']['pion'] / products_s:.2f}x their time"
    )
  print(f"ours / optax.contrib.muon = {ours / theirs:.3f}   (target <= 0.35)")
  print(f"ours / optax.adamw        = {results['ratio_ours_over_adamw']:.2f}")
  print(
    f"Newton-Schulz rate: ours {results['ns_gflops_ours']:.0f} GFLOP/s, optax "
    f"{results['ns_gflops_optax']:.0f} GFLOP/s, matmul {rate / 1e9:.0f} GFLOP/s "
    "(whole step time, so a lower bound)"
  )
  results["orthogonality"] = orthogonality(FLAGS.layers)
  for shape, row in results["orthogonality"].items():
    print(
      f"  {shape:10s} sigma ours [{row['ours_sigma_min_max'][0]:.3f}, "
      f"{row['ours_sigma_min_max'][1]:.3f}]  optax [{row['optax_sigma_min_max'][0]:.3f}, "
      f"{row['optax_sigma_min_max'][1]:.3f}]  max|diff| {row['max_abs_diff']:.1e}"
    )
  if FLAGS.out:
    with open(FLAGS.out, "w") as f:
      json.dump(results, f, indent=2)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags("benchmarks/optimizer_step.py"))
