"""Each optimizer confines the weights to its own norm ball: a least-squares demo.

    python -m analysis.constraint_demo [--steps=2000] [--weight_decay=0.5] [--out=demo.json]

Fits W (d_in×d_out) to Y = X·W* by least squares, where the unconstrained
minimum W* has entries and singular values far outside the radius 1/λ, with
AdamW, Lion and Muon (exact polar factor and Newton–Schulz), all with decoupled
weight decay λ and a cosine-decayed learning rate. Lion-K theory (Chen et al.
2023) puts Lion in the ℓ∞ ball λ·‖W‖∞ ≤ 1 and Muon in the spectral ball
λ·σ_max(W) ≤ 1; AdamW behaves like Lion (Xie & Li 2024, "Implicit Bias of
AdamW: ℓ∞ Norm Constrained Optimization"). The table prints each one's loss and
both constraint values; the active one sits at 1 (Newton–Schulz Muon a little
above: its polynomial overshoots, up to about 1.13).
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import flags

from analysis import experiment_cli
from optimizers import dual_norms, lion, muon
from training import cli


def define_flags() -> dict[str, flags.FlagHolder]:
  """The command's flags; defined at startup only, so importing this module adds none."""
  return {
    "steps": flags.DEFINE_integer(
      "steps", 2000, "Training steps for every optimizer.", lower_bound=1
    ),
    "weight_decay": experiment_cli.define_positive_float(
      "weight_decay", 0.5, "Decoupled weight decay λ > 0 (ball radius 1/λ)."
    ),
    "learning_rate": experiment_cli.define_positive_float(
      "learning_rate", 0.02, "Peak learning rate (cosine decay to 0)."
    ),
    "seed": flags.DEFINE_integer("seed", 0, "Seed of the data and the planted W*.", lower_bound=0),
    "out": flags.DEFINE_string("out", None, "Optional JSON file for the table."),
  }


def make_problem(seed, n=256, d_in=32, d_out=16):
  """X (n×d_in) and Y = X·W*; W* has singular values 16…1 and entries beyond 1/λ."""
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, d_in)) / np.sqrt(d_in)
  u = np.linalg.qr(rng.normal(size=(d_in, d_out)))[0]
  v = np.linalg.qr(rng.normal(size=(d_out, d_out)))[0]
  w_star = u @ np.diag(np.geomspace(16.0, 1.0, d_out)) @ v.T
  return jnp.asarray(x, jnp.float32), jnp.asarray(x @ w_star, jnp.float32), w_star


def train(opt, x, y, steps):
  """Full-batch training from zero inside one jitted scan; returns W."""
  loss = lambda w: 0.5 * jnp.mean(jnp.sum((x @ w["w"] - y) ** 2, axis=1))

  def body(carry, _):
    w, state = carry
    updates, state = opt.update(jax.grad(loss)(w), state, w)
    return (optax.apply_updates(w, updates), state), None

  @jax.jit
  def run(w):
    (w, _), _ = jax.lax.scan(body, (w, opt.init(w)), None, length=steps)
    return w, loss(w)

  return run({"w": jnp.zeros((x.shape[1], y.shape[1]), jnp.float32)})


def main(f: dict[str, flags.FlagHolder]) -> None:
  out = f["out"].value and cli.output_file(f["out"].value, "--out")  # Before training.
  lam, steps = f["weight_decay"].value, f["steps"].value
  lr = optax.cosine_decay_schedule(f["learning_rate"].value, steps)
  everything = lambda path, leaf: True  # The one matrix is a hidden layer here.
  optimizers = {
    "adamw": optax.adamw(lr, b1=0.9, b2=0.95, weight_decay=lam),
    "lion": lion(lr, weight_decay=lam),
    "muon (svd)": muon(lr, method="svd", weight_decay=lam, scale="none", routing=everything),
    "muon (newton-schulz)": muon(lr, weight_decay=lam, scale="none", routing=everything),
  }
  x, y, w_star = make_problem(f["seed"].value)
  print(
    f"least squares, W* {w_star.shape}: λ = {lam}, radius 1/λ = {1 / lam:.2f}; unconstrained "
    f"minimum has λ·‖W*‖∞ = {lam * np.abs(w_star).max():.2f}, "
    f"λ·σ_max(W*) = {lam * np.linalg.norm(w_star, 2):.2f}"
  )
  print(f"{'optimizer':22s} {'train loss':>11s} {'λ·‖W‖∞':>8s} {'λ·σ_max':>8s}")
  table = {}
  for name, opt in optimizers.items():
    w, final_loss = train(opt, x, y, steps)
    row = {
      "loss": float(final_loss),
      "lambda_linf": lam * float(dual_norms("l1", w)["w"]),
      "lambda_spectral": lam * float(dual_norms("nuclear", w)["w"]),
    }
    if not np.isfinite(row["loss"]):
      raise SystemExit(f"{name}: loss became {row['loss']}; lower --learning_rate.")
    table[name] = row
    print(f"{name:22s} {row['loss']:11.4f} {row['lambda_linf']:8.3f} {row['lambda_spectral']:8.3f}")
  if out:
    out.write_text(json.dumps({"weight_decay": lam, "steps": steps, "results": table}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
  experiment_cli.command("analysis.constraint_demo", define_flags, main)
