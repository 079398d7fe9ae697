r"""The mode-connectivity sweep: AdamW, Lion and Muon on a planted teacher, over widths.

    python -m analysis.sweep --config=configs/relu2_sweep.py --workdir=runs/sweep
    python -m analysis.sweep --config=configs/relu2_sweep.py:full --workdir=runs/sweep_full

Trains ``seeds`` networks per (optimizer, width) with train.py (configs/relu2.py
plus the overrides below), each optimizer with decoupled weight decay λ large
enough that its ball {λ·K*(θ) ≤ 1} is active (the summary's constraint values
sit at ≈ 1), then measures the barriers between all pairs of solutions along
each path condition, and writes WORKDIR/report.md, WORKDIR/sweep.json and plots.

Variants: (none) the default, ~5 minutes on a 2-core CPU; full (more seeds,
widths and steps, 65 points); runlocal (a tiny sweep for tests). Override any
field with --config.a.b=V, e.g. --config.seeds=8.

λ(m) = weight_decay · max(1, m / weight_decay_ref_width)^width_power: wider
networks spread the same function over more, smaller weights, so a fixed λ
stops binding at large width; the growth keeps the ball active there too
(check the constraint table of the report).
"""

import ml_collections

from configs.common import parse_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = parse_arg(arg, full=False, runlocal=False)
  c = ml_collections.ConfigDict()
  c.train_config = "configs/relu2.py"  # Each run: train.py --config=THIS:optimizer=...,width=...
  c.widths = [2, 4, 16, 128]  # Teacher width 4: below, at, above, far above.
  c.seeds = 4
  c.num_steps = 1500
  c.seed_chunk_size = 0  # Seeds per vmapped chunk on a CPU (0 = all at once).
  c.parallel = 2  # train.py subprocesses at once.

  # train.py config.optimizer overrides per optimizer; weight_decay λ is scaled
  # with width (module docstring), as is Muon's AdamW side (adam_weight_decay).
  c.optimizers = ml_collections.ConfigDict(
    {
      "adamw": {"learning_rate": 0.01, "weight_decay": 3.0, "b2": 0.95},
      "lion": {"learning_rate": 0.001, "weight_decay": 3.0},
      "muon": {"learning_rate": 0.02, "weight_decay": 3.0, "adam_weight_decay": 3.0},
    }
  )
  c.weight_decay_ref_width = 16
  c.width_power = ml_collections.ConfigDict({"adamw": 0.5, "lion": 0.5, "muon": 0.25})

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
  c.conditions = ["linear", "linear+align", "bezier", "bezier+align"]
  c.points = 33
  c.num_bends = 1
  c.fit_steps = 300
  c.fit_lr = 0.01
  c.project = True  # Same-optimizer curves stay inside the ball.
  c.barrier_kind = "linear"  # Entezari et al.: max_t L(t) − interpolated ends.
  # A barrier counts as ≈ 0 below this fraction of the zero predictor's train loss.
  c.connected_tol = 0.02
  c.connectivity_plots = "extremes"  # Per-pair PNGs: all | extremes (min/max width) | none.

  if arg.full:
    c.widths = [1, 2, 4, 8, 16, 64, 256, 1024]
    c.seeds = 8
    c.num_steps = 4000
    c.seed_chunk_size = 8
    c.points = 65
    c.fit_steps = 1000
    c.connectivity_plots = "all"
  if arg.runlocal:
    c.widths = [2, 8]
    c.seeds = 2
    c.num_steps = 100
    c.points = 9
    c.fit_steps = 20
    c.conditions = ["linear", "bezier+align"]
    c.task.update(dict(input_dim=4, n_train=64, n_test=64))
    c.connectivity_plots = "none"
  return c
