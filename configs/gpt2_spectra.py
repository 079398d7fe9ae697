r"""Spectra along linear paths between GPT-2 solutions of AdamW and Muon.

    python -m analysis.gpt2_spectra --config=configs/gpt2_spectra.py --workdir=runs/gpt2_spectra

Trains the tiny GPT-2 (configs/gpt2.py, bytes tokenizer, the built-in prose +
code + math corpus) with each optimizer and seed as its own workdir
(DIR/runs/{shared,independent}/OPT_sSEED, by `python train.py`; finished runs
are skipped on a rerun), then, per protocol (shared start; independent inits
aligned by weight matching), evaluates linear paths between same-optimizer,
cross-optimizer and (as a control) self pairs: validation loss, and σ_max,
stable rank, effective rank and the singular values of every attention and MLP
matrix along the path, with interval verdicts over seeds (tolerances declared
below). Writes DIR/report.md, DIR/spectra.json and DIR/*.png. The default (12
runs of 600 steps) takes about 15 minutes on a 2-core CPU.

Variants: size=tiny|small (`:size=small` runs the small GPT-2), steps=N, points=P (path points), runlocal (a few
steps, for tests). Fields can be overridden: --config.optimizers=adamw+muon+lion.
"""

import ml_collections

from configs.common import or_default, parse_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = parse_arg(arg, size="tiny", steps=int, points=int, runlocal=False)
  config = ml_collections.ConfigDict()
  config.optimizers = "adamw+muon"  # '+'-separated; every pair of them is compared
  # shared_start: every run from one init (init_seed), data order from its seed;
  # spawn: every run from one trunk run's parameters after spawn_steps (below);
  # aligned: independent inits, b weight-matched onto a (analysis.gpt2_alignment)
  # before interpolating; unaligned: independent inits as they are.
  config.protocols = "shared_start+aligned"
  config.init_seed = 0  # the shared start's initialization (and the spawn trunk's)
  # spawn: one trunk trains spawn_steps with spawn_optimizer from init_seed; every run
  # then starts from its parameters with a fresh optimizer state and its own data order.
  # Measured on tiny (600 steps, 3 seeds): spawned at 100 the same-AdamW barrier is 0.086
  # nats, at 300 it is 0.014 (below barrier_tolerance): 300 is where AdamW's paths are
  # stable to its data order, the point of spawning. It does not carry over to longer
  # runs: children of 1500 steps from the same 300-step trunk are 0.175 nats apart, so
  # raise spawn_steps with steps (1000 brings 1500-step AdamW children back to 0.016; a
  # Muon trunk of 1000 kept every 600-step pair ≤ 0.02).
  config.spawn_steps = 4 if arg.runlocal else 300
  config.spawn_optimizer = "adamw"
  config.seeds = "0+1" if arg.runlocal else "0+1+2"  # >= 3 for an interval
  config.size = arg.size
  config.steps = or_default(arg.steps, 8 if arg.runlocal else 600)
  config.batch = 8 if arg.runlocal else 16
  config.seq_len = 32 if arg.runlocal else 128
  config.runlocal = arg.runlocal  # the runs use configs/gpt2.py:runlocal (small corpus)
  # Extra train.py flags for every run, e.g. "--config.optimizer.weight_decay=0.0".
  config.train_flags = ""
  config.parallel_runs = 2  # train.py processes at once
  config.points = or_default(arg.points, 5 if arg.runlocal else 17)
  config.include_self = True  # the path from a run to itself: constant spectra
  config.eval_batches = 1 if arg.runlocal else 4  # validation batches per source
  config.eval_batch_size = 8 if arg.runlocal else 16
  # "Near-monotone": a cross path's statistic may step against its overall
  # direction by at most this fraction of |end − start| (or of the endpoint value).
  config.monotone_tolerance = 0.02
  # Declared before the run (analysis/gpt2_spectra_stats.py): "preserved" when a same
  # pair's worst |s(t) − s_lin(t)| is at most this many endpoint spreads (std over seeds);
  config.preserve_tolerance = 1.0
  # "smooth" when a cross pair's worst overshoot is at most this × |end − start|;
  config.spike_tolerance = 0.1
  # "low barrier" at most this many nats above the endpoints' interpolation.
  config.barrier_tolerance = 0.05
  return config
