"""Our NorMuon and Pion step beside a PyTorch transcription of their authors' code,
on the same matrices and the same threads (issue 13: ours ≥ 1.0× their speed).

    python benchmarks/torch_zoo.py [--layers=2] [--repeats=3] [--zoo=normuon,pion] [--out=FILE.json]

(run as a script from the repository root: it imports `optimizer_step` from its own folder,
for the tree, the timing helper and the flags --layers, --repeats, --out and --zoo.)

The tree: `benchmarks/optimizer_step.py`'s GPT-2-124M-shaped tree (``--layers`` blocks),
restricted to the block matrices `default_muon_routing` selects (c_attn, attn c_proj, c_fc,
mlp c_proj per block: the leaves NorMuon and Pion act on; embeddings, LayerNorms and biases,
AdamW on both sides in the authors' setups too, are left out), f32, random weights and a
fixed random gradient (`random_like`). Ours: `factory.make_optimizer` of the section
`optimizer_step.py --zoo` times (`configs/common.py` defaults, weight_decay 0.01), one
jitted update + apply step with donated buffers, as `optimizer_step.time_step`; that
helper's own figure (min over --repeats, not interleaved) is printed beside.

Theirs, in torch (under torch.no_grad, torch.set_num_threads(os.cpu_count()): XLA's CPU
client also uses every core; eager, as the authors run it, or with --torch_compile each
per-matrix step through torch.compile, whose first step compiles C++ for tens of seconds on
a small CPU), written here from the authors' code:
- NorMuon (github.com/zichongli5/NorMuon, normuon.py: ``normuon_update`` and
  ``SingleDeviceNorMuon.step``): W is (out, in); M ← lerp(M, G, 1 − β); u = lerp(G, M, β);
  O = NS5(u) (Keller Jordan's quintic: the wide orientation, X/(‖X‖_F + 1e−7), 5 steps of
  X ← aX + (bA + cA²)X, A = XXᵀ); v ← lerp(v, mean over the input axis of O⊙O, 1 − β₂);
  Ô = O·1/(√v + 1e−10); Ô ← Ô·‖O‖_F/(‖Ô‖_F + 1e−10)·√max(1, out/in);
  W ← (1 − ηλ)W − ηÔ. The authors run NS5 in bf16; here it runs in f32, as ours. (They
  lerp into the gradient in place; here u is a new tensor, so the fixed gradient stays.)
- Pion (github.com/Sphere-AI-Lab/pion, megatron-lm/megatron/core/optimizer/pion.py: the
  "main" path of ``_pion_update_for_matrix``, lie momentum, side "both", no second
  moment): G_in = WᵀG − (WᵀG)ᵀ, G_out = GWᵀ − (GWᵀ)ᵀ; m ← β₁m + (1 − β₁)G per side;
  A = −m; base = W·A_in + A_out·W; α = η·rms·√(out·in)/(‖base‖_F + 1e−12); then
  W ← W + (WÂ_in + (WÂ_in)Â_in/2) and W ← W + (Â_outW + Â_out(Â_outW)/2), in that order.
  That is 4 products per side (2·out·in² each on the in side, 2·out²·in on the out side);
  ours reuses base's product, 3·max + 4·min. The authors' per-head QKV and up/gate splits
  are off here, as in ours (a leaf is one matrix).

Before timing, one step of each from the same weights, gradient and zero state is
compared: the largest |W_ours − W_torch| (and of the updates W_new − W) is printed. Then
ours and theirs take turns, one step each, --repeats times after a warm-up step; the table
gives the min (and median) seconds per step and speed = torch time / our time (≥ 1.0: ours
is as fast or faster).
"""

import json
import math
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optimizer_step
from absl import app, flags
from optimizer_step import ZOO_SETTINGS, gpt2_124m_tree, random_like, time_step

from configs.common import optimizer_config
from optimizers import factory
from optimizers.muon import default_muon_routing
from training import cli
from training.perf import matmul_rate

# optimizer_step defines --layers, --repeats and --out (same meaning here) and --zoo,
# narrowed here to the two rules with a torch transcription.
FLAGS = flags.FLAGS
flags.adopt_module_key_flags(optimizer_step)  # So --help lists them.
TORCH_RULES = ("normuon", "pion")
FLAGS.set_default("zoo", list(TORCH_RULES))
FLAGS["zoo"].help = f"Which of {', '.join(TORCH_RULES)} to time against their torch transcription."
flags.DEFINE_bool(
  "torch_compile",
  False,
  "Wrap the torch per-matrix steps in torch.compile (default: eager, the authors' code as run).",
)
flags.DEFINE_bool(
  "check", True, "Compare one step of ours and the torch step on the same inputs first."
)
QUINTIC = (3.4445, -4.7750, 2.0315)


def matrix_subtree(tree):
  """The leaves `default_muon_routing` selects, in the tree's own nesting."""
  labels = jax.tree_util.tree_map_with_path(default_muon_routing, tree)

  def keep(t, lab):
    if not isinstance(t, dict):
      return t
    return {k: keep(t[k], lab[k]) for k in t if any(jax.tree.leaves(lab[k]))}

  return keep(tree, labels)


# ---- The authors' rules, transcribed to plain torch (W, G are (out, in)). ----


def torch_rules():
  import torch  # pylint: disable=g-import-not-at-top

  def fro(x):
    return torch.linalg.matrix_norm(x)

  def ns5(g, steps=5):
    a, b, c = QUINTIC
    tall = g.size(-2) > g.size(-1)
    x = g.mT if tall else g
    x = x / (fro(x) + 1e-7)
    for _ in range(steps):
      gram = x @ x.mT
      poly = b * gram + c * (gram @ gram)
      x = a * x + poly @ x
    return x.mT if tall else x

  def normuon_init(w):
    return {"m": torch.zeros_like(w), "v": torch.zeros_like(w[..., :1])}

  def normuon_step(w, g, st, lr, weight_decay, beta, beta2):
    st["m"].lerp_(g, 1 - beta)
    o = ns5(torch.lerp(g, st["m"], beta))
    norm_o = fro(o)
    st["v"].lerp_((o * o).mean(dim=-1, keepdim=True), 1 - beta2)
    o_hat = o * (1 / (st["v"].sqrt() + 1e-10))
    o_hat = o_hat * (norm_o / (fro(o_hat) + 1e-10))
    o_hat = o_hat * max(1.0, w.size(-2) / w.size(-1)) ** 0.5
    if weight_decay:
      w.mul_(1 - lr * weight_decay)
    w.add_(o_hat, alpha=-lr)

  def pion_init(w):
    out_dim, in_dim = w.shape
    return {"m_in": w.new_zeros(in_dim, in_dim), "m_out": w.new_zeros(out_dim, out_dim)}

  def pion_step(w, g, st, lr, b1, rms, degree):
    wtg = w.T @ g
    gwt = g @ w.T
    st["m_in"].mul_(b1).add_(wtg - wtg.T, alpha=1 - b1)
    st["m_out"].mul_(b1).add_(gwt - gwt.T, alpha=1 - b1)
    a_in, a_out = -st["m_in"], -st["m_out"]
    out_dim, in_dim = w.shape
    base = w @ a_in + a_out @ w
    alpha = lr * rms * math.sqrt(out_dim * in_dim) / (fro(base) + 1e-12)
    a_in, a_out = alpha * a_in, alpha * a_out
    term = w @ a_in  # In side: W ← W·E(Â_in), the non-identity part added.
    delta = term
    for k in range(2, degree + 1):
      term = term @ a_in / k
      delta = delta + term
    w.add_(delta)
    term = a_out @ w  # Out side, on the updated W: W ← E(Â_out)·W.
    delta = term
    for k in range(2, degree + 1):
      term = a_out @ term / k
      delta = delta + term
    w.add_(delta)

  return {"normuon": (normuon_init, normuon_step), "pion": (pion_init, pion_step)}


def torch_hyperparameters(name, section):
  """The keyword arguments of the torch step for our section's values."""
  s = dict(section)
  schedule = s.get("schedule", "constant")
  if schedule != "constant" or s.get("warmup_steps", 0):
    raise app.UsageError(f"{name}: the torch side assumes a constant learning rate.")
  if name == "normuon":
    if s["form"] != "code" or not s["nesterov"]:
      raise app.UsageError("normuon: the authors' code is form='code' with Nesterov.")
    return dict(
      lr=s["learning_rate"], weight_decay=s["weight_decay"], beta=s["beta"], beta2=s["beta2"]
    )
  if s["side"] != "both" or s.get("momentum", "lie") != "lie" or s.get("second_moment"):
    raise app.UsageError("pion: transcribed for side='both', lie momentum, no second moment.")
  # Pion matrices take no weight decay (ours and the authors' script: AdamW groups only).
  return dict(lr=s["learning_rate"], b1=s["b1"], rms=s["rms"], degree=s["degree"])


class TorchSide:
  """The torch step over every matrix of the tree, kept in the authors' (out, in)."""

  def __init__(self, name, params, grads, hyper, compile_step):
    import torch  # pylint: disable=g-import-not-at-top

    init, step = torch_rules()[name]
    if compile_step:
      step = torch.compile(step)
    self._torch, self._step, self._hyper = torch, step, hyper
    to_t = lambda x: torch.from_numpy(np.ascontiguousarray(np.asarray(x, np.float32).T))
    self.w = [to_t(x) for x in jax.tree.leaves(params)]
    self.g = [to_t(x) for x in jax.tree.leaves(grads)]
    self.state = [init(w) for w in self.w]

  def step(self):
    with self._torch.no_grad():
      for w, g, st in zip(self.w, self.g, self.state):
        self._step(w, g, st, **self._hyper)

  def kernels(self):
    """The weights back in the flax (in, out) layout."""
    return [w.numpy().T for w in self.w]


def torch_matmul_rate(m, k, n, repeats=10):
  """FLOP/s of a torch (m×k)·(k×n) f32 matmul, best of ``repeats`` after a warm-up
  (as `training.perf.matmul_rate` on the jax side)."""
  import torch  # pylint: disable=g-import-not-at-top

  gen = torch.Generator().manual_seed(0)
  a, b = torch.randn(m, k, generator=gen), torch.randn(k, n, generator=gen)
  a @ b
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    a @ b
    best = min(best, time.perf_counter() - t0)
  return 2 * m * k * n / best


def our_step_fn(opt):
  """`optimizer_step.time_step`'s step: update + apply under one jit, donated buffers."""

  def step(params, state, grads):
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  return jax.jit(step, donate_argnums=(0, 1))


def check_one_step(name, opt, params, grads, hyper):
  """Largest differences after one step from the same weights, gradient, zero state."""
  state = opt.init(params)
  updates, _ = jax.jit(opt.update)(grads, state, params)
  ours_new = [np.asarray(p + u) for p, u in zip(jax.tree.leaves(params), jax.tree.leaves(updates))]
  ours_upd = [np.asarray(u) for u in jax.tree.leaves(updates)]
  side = TorchSide(name, params, grads, hyper, compile_step=False)
  side.step()
  theirs_new = side.kernels()
  theirs_upd = [t - np.asarray(p) for t, p in zip(theirs_new, jax.tree.leaves(params))]
  diff_w = max(float(np.abs(a - b).max()) for a, b in zip(ours_new, theirs_new))
  diff_u = max(float(np.abs(a - b).max()) for a, b in zip(ours_upd, theirs_upd))
  scale_u = max(float(np.abs(a).max()) for a in ours_upd)
  return {"max_abs_diff_weights": diff_w, "max_abs_diff_update": diff_u, "max_abs_update": scale_u}


def interleaved(name, opt, params, grads, hyper, repeats):
  """Seconds per step of ours and of torch, alternating one step each."""
  step = our_step_fn(opt)
  p, st = jax.tree.map(jnp.copy, params), opt.init(params)
  t0 = time.perf_counter()
  p, st = jax.block_until_ready(step(p, st, grads))
  ours_first = time.perf_counter() - t0
  side = TorchSide(name, params, grads, hyper, FLAGS.torch_compile)
  t0 = time.perf_counter()
  side.step()
  torch_first = time.perf_counter() - t0
  ours, theirs = [], []
  for _ in range(repeats):
    t0 = time.perf_counter()
    p, st = jax.block_until_ready(step(p, st, grads))
    ours.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    side.step()
    theirs.append(time.perf_counter() - t0)
  return {
    "ours_s": ours,
    "torch_s": theirs,
    "ours_first_s": ours_first,
    "torch_first_s": torch_first,
    "ours_min_s": min(ours),
    "torch_min_s": min(theirs),
    "ours_median_s": statistics.median(ours),
    "torch_median_s": statistics.median(theirs),
    "speed_min": min(theirs) / min(ours),
    "speed_median": statistics.median(theirs) / statistics.median(ours),
  }


def main(argv):
  del argv
  if FLAGS.out:
    cli.handle("benchmarks/torch_zoo.py", lambda: cli.output_file(FLAGS.out))
  for name in FLAGS.zoo:
    if name not in TORCH_RULES:
      raise app.UsageError(f"--zoo: no torch transcription of {name!r}; known: {TORCH_RULES}.")
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:  # Not a dependency: its PyPI default is a multi-GB CUDA build.
    raise SystemExit(
      "benchmarks/torch_zoo.py: PyTorch is not installed: pip install torch (a CPU build: "
      "--index-url https://download.pytorch.org/whl/cpu)."
    ) from None

  threads = os.cpu_count()
  torch.set_num_threads(threads)
  params = matrix_subtree(random_like(gpt2_124m_tree(FLAGS.layers), seed=1))
  grads = random_like(params, seed=0)
  shapes = [x.shape for x in jax.tree.leaves(params)]
  print(
    f"{len(shapes)} matrices ({sum(math.prod(s) for s in shapes) / 1e6:.1f}M parameters), f32; "
    f"jax {jax.__version__} on {jax.devices()[0].device_kind}, torch {torch.__version__} with "
    f"{torch.get_num_threads()} threads ({'torch.compile' if FLAGS.torch_compile else 'eager'})"
  )
  # Both libraries' plain f32 matmul on GPT-2's MLP shape, taking turns.
  rates = [(matmul_rate(768, 3072, 768), torch_matmul_rate(768, 3072, 768)) for _ in range(2)]
  jax_rate, torch_rate = max(r[0] for r in rates), max(r[1] for r in rates)
  print(
    f"plain f32 matmul 768x3072x768: jax {jax_rate / 1e9:.0f} GFLOP/s, torch {torch_rate / 1e9:.0f} GFLOP/s"
  )
  results = {
    "jax_matmul_gflops": jax_rate / 1e9,
    "torch_matmul_gflops": torch_rate / 1e9,
    "machine": f"{platform.processor() or platform.machine()}, {threads} cores",
    "jax": jax.__version__,
    "torch": torch.__version__,
    "torch_threads": torch.get_num_threads(),
    "torch_mode": "compile" if FLAGS.torch_compile else "eager",
    "layers": FLAGS.layers,
    "repeats": FLAGS.repeats,
    "matrices": [list(s) for s in shapes],
    "optimizers": {},
  }
  for name in FLAGS.zoo:
    section = dict(optimizer_config(name, weight_decay=0.01), **ZOO_SETTINGS[name])
    opt = factory.make_optimizer(section, num_steps=1000)
    hyper = torch_hyperparameters(name, section)
    row = {"hyperparameters": hyper}
    if FLAGS.check:
      row["check"] = check_one_step(name, opt, params, grads, hyper)
      c = row["check"]
      print(
        f"{name}: one step, ours vs torch: max|dW| {c['max_abs_diff_weights']:.1e}, "
        f"max|d update| {c['max_abs_diff_update']:.1e} (max|update| {c['max_abs_update']:.1e})"
      )
    row.update(interleaved(name, opt, params, grads, hyper, FLAGS.repeats))
    row["ours_time_step_s"], _ = time_step(
      opt, jax.tree.map(jnp.copy, params), grads, FLAGS.repeats
    )
    results["optimizers"][name] = row
  print(
    f"\n{'optimizer':10s} {'ours s/step':>12s} {'torch s/step':>13s} {'speed':>7s} "
    f"{'(medians)':>22s} {'time_step':>10s}"
  )
  for name, r in results["optimizers"].items():
    print(
      f"{name:10s} {r['ours_min_s']:12.3f} {r['torch_min_s']:13.3f} {r['speed_min']:6.2f}x "
      f"{r['ours_median_s']:7.3f} {r['torch_median_s']:7.3f} {r['speed_median']:5.2f}x "
      f"{r['ours_time_step_s']:10.3f}"
    )
  print("speed = torch time / our time (min over repeats); target (issue 13) >= 1.0")
  if FLAGS.out:
    with open(FLAGS.out, "w") as f:
      json.dump(results, f, indent=2)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags("benchmarks/torch_zoo.py"))
