r"""The mode-connectivity sweep: AdamW, Lion and Muon on a planted teacher, over widths.

    python -m analysis.sweep --config=configs/relu2_sweep.py --workdir=runs/sweep
    python -m analysis.sweep --config=configs/relu2_sweep.py:full --workdir=runs/sweep_full

Trains ``seeds`` networks per (optimizer, width) with train.py (configs/relu2.py
plus the overrides below): full batch, warmup + cosine to 1% of the learning
rate, decoupled weight decay λ chosen per optimizer and width so that the
optimizer's own ball {λ·K*(θ) ≤ 1} is active while the train loss still
reaches ≈ 0 (both measured per run and shown in the report). Then it measures
the barriers between all pairs of solutions along each path condition, gates
out unconverged runs, and decides the declared claims on seed-resampled
intervals (analysis/sweep_claims.py). Writes WORKDIR/report.md,
WORKDIR/sweep.json and plots.

Variants: (none) the default, ≤ 5 minutes on a 2-core CPU; full (widths to
1024, 8 seeds, more steps, ≤ 1 hour on 2 cores); runlocal (a tiny sweep for
tests). Override any field with --config.a.b=V, e.g. --config.seeds=8.

λ(m) = base · (m / weight_decay_ref_width)^power, capped at cap (0: no cap),
per optimizer and hyperparameter in ``weight_decay``. The bases and powers
come from a scan on this task (3000 steps): an ℓ∞ ball (AdamW, Lion) must
shrink like 1/√m to stay active, since a wider network spreads the same
function over more, smaller weights (twice these λ left the train loss at
1–2% of the zero predictor's); Muon's spectral norm of a fixed function
hardly moves with width, so its λ grows slowly and stops at 2 (above that
the head's ℓ∞ ball, Muon's AdamW side, binds first and the loss stays up).
"""

import ml_collections

from configs.common import parse_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = parse_arg(arg, full=False, runlocal=False)
  c = ml_collections.ConfigDict()
  c.train_config = "configs/relu2.py"  # Each run: train.py --config=THIS:optimizer=...,width=...
  c.widths = [4, 8, 16, 64, 256]  # Teacher width 4: at, 2x, 4x, 16x, 64x.
  c.seeds = 6
  c.num_steps = 3000
  c.seed_chunk_size = 0  # Seeds per vmapped chunk on a CPU (0 = all at once).
  c.parallel = 2  # train.py subprocesses at once.
  # The learning-rate schedule of every run: to convergence, ending small.
  c.schedule = "warmup_cosine"
  c.warmup_steps = 100
  c.final_lr_fraction = 0.01

  # train.py config.optimizer overrides per optimizer (λ comes from weight_decay).
  c.optimizers = ml_collections.ConfigDict(
    {
      "adamw": {"learning_rate": 0.01, "b2": 0.95},
      "lion": {"learning_rate": 0.001},
      "muon": {"learning_rate": 0.02},
    }
  )
  # {optimizer: {hyperparameter: [base, power, cap]}}: λ(m) above. Muon's
  # adam_weight_decay is the ℓ∞ ball of its AdamW side (the head, the biases).
  c.weight_decay = ml_collections.ConfigDict(
    {
      "adamw": {"weight_decay": [1.0, 0.5, 0.0]},
      "lion": {"weight_decay": [1.0, 0.5, 0.0]},
      "muon": {"weight_decay": [1.0, 0.25, 2.0], "adam_weight_decay": [0.5, 0.5, 0.0]},
    }
  )
  c.weight_decay_ref_width = 4

  # train.py config.data overrides: the planted teacher, the same for every run.
  c.task = ml_collections.ConfigDict(
    dict(
      task="teacher",
      input_dim=8,
      n_train=256,
      n_test=1024,
      teacher_width=4,
      label_noise=0.0,
      seed=0,
    )
  )

  # The analysis: every (path, align) condition on all pairs of each width.
  c.conditions = ["linear", "linear+align"]
  c.points = 33
  c.num_bends = 1
  c.fit_steps = 300
  c.fit_lr = 0.01
  c.project = True  # Same-optimizer curves stay inside the ball.
  c.barrier_kind = "linear"  # Entezari et al.: max_t L(t) − interpolated ends.
  c.connectivity_plots = "none"  # Per-pair PNGs: all | extremes (min/max width) | none.

  # Declared before the run: the gate, the primary condition and the claims' nulls.
  # A run (one seed) counts as converged when its train loss is at most this
  # fraction of the zero predictor's; pairs with an unconverged end are excluded.
  c.converged_fraction = 0.01
  # A barrier counts as ≈ 0 below this fraction of the zero predictor's train loss.
  c.connected_tol = 0.02
  c.primary_condition = "linear+align"  # Every claim is decided on this one.
  c.small_width = 4  # Claim (b)'s "small width": the teacher's.
  c.large_width = 256  # Claim (a)'s "large width".
  c.cross_pair = "adamw-muon"  # Claim (b)'s cross-optimizer pair.
  c.min_pairs = 6  # Fewer converged pairs than this in a table: inconclusive.
  c.n_resamples = 1000  # Seed resamples per interval.
  # The ball counts as active when λ·K*/bound on the hidden matrix reaches this
  # fraction of the edge (1; for Newton–Schulz Muon the measured radius is reported).
  c.active_fraction = 0.7

  if arg.full:
    c.widths = [4, 8, 16, 64, 256, 1024]
    c.large_width = 1024
    c.seeds = 8
    c.num_steps = 4000
    c.seed_chunk_size = 8
    c.points = 65
    c.conditions = ["linear", "linear+align", "bezier+align"]
    c.fit_steps = 500
    c.connectivity_plots = "extremes"
  if arg.runlocal:
    c.widths = [4, 16]
    c.small_width, c.large_width = 4, 16
    c.seeds = 3
    c.num_steps = 300
    c.warmup_steps = 10
    c.points = 9
    c.fit_steps = 20
    c.n_resamples = 100
    c.min_pairs = 1
    c.converged_fraction = 1.0  # A few steps cannot converge: the gate is tested on its own.
    c.conditions = ["linear", "linear+align", "bezier+align"]
    c.task.update(dict(input_dim=4, n_train=64, n_test=64))
  return c
