r"""The optimizer atlas: where every optimizer's solutions land, on one relu2 task.

    python -m analysis.atlas --config=configs/atlas.py --workdir=runs/atlas
    python -m analysis.atlas --config=configs/atlas.py:full --workdir=runs/atlas_full
    python -m analysis.atlas --config=configs/atlas.py:gpt2 --workdir=runs/atlas_gpt2

Every entry of ``entries`` is trained (train.py, configs/relu2.py, ``seeds``
vmapped seeds per run) at each learning rate of its grid, the same steps and
schedule for all; the best learning rate per entry is chosen on the
validation half of the test inputs (never the train loss), and the chosen
runs are compared: barriers after alignment between all pairs, every entry's
ball evaluated at every other's solutions, spectra, function distances,
clusters, and whether ball distance predicts the cross barrier
(analysis/atlas.py).

Variants: (none) the default, ≤ 15 minutes on 2 CPU cores; full (more seeds,
steps and learning rates); runlocal (a tiny atlas for tests); gpt2 (the atlas
on the tiny GPT-2 and the built-in prose + code + math mixture, `gpt2_config`
below; with full or runlocal too). Fields can be
overridden, e.g. --config.seeds=8, --config.grid_extensions=0 (the fixed grid) or
--config.entries.adamw.overrides.learning_rate=... (an entry's grid centre)

Entries: a name, an optimizer of configs/common.py's OPTIMIZER_DEFAULTS and
its overrides (so one optimizer can appear at several settings: Freon at
q = 2/3 and q = 2, Lion-K with several K). Nexus is a GPT-2 (multi-source)
method: it has no relu2 entry (the relu2 task has one data source).
"""

import ml_collections

from configs.common import parse_arg

# (entry name, optimizer, overrides). λ (weight_decay) is the one that sets the
# implicit ball; each optimizer's relu2 default learning rate is the centre of its grid.
ENTRIES = (
  ("adamw", "adamw", {}),
  ("lion", "lion", {}),
  ("lion_k_nuclear", "lion_k", {"k": "nuclear"}),
  ("lion_k_rownorm", "lion_k", {"k": "rownorm"}),
  ("muon", "muon", {}),
  ("normuon", "normuon", {}),
  ("polargrad", "polargrad", {}),
  ("kaon", "kaon", {}),
  ("freon_q2/3", "freon", {"q": 2 / 3}),
  ("freon_q2", "freon", {"q": 2.0}),
  ("pion", "pion", {}),
  ("sf_normuon", "sf_normuon", {}),
  ("mimuon", "mimuon", {}),
  ("symmetric", "symmetric", {}),
  ("scion", "scion", {}),
  ("dion", "dion", {}),
)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = parse_arg(arg, full=False, runlocal=False, gpt2=False)
  if arg.gpt2:
    return gpt2_config(arg)
  c = ml_collections.ConfigDict()
  c.train_config = "configs/relu2.py"
  c.width = 16  # Teacher width 4: over-parametrized, so zero train loss is reachable.
  c.seeds = 4  # Vmapped in one program per run; seed s has one init for every entry.
  c.num_steps = 2000
  c.parallel = 2  # train.py processes at once.
  c.weight_decay = 0.1  # λ for every entry (decoupled: the step is lr·λ·θ).
  c.schedule = "warmup_cosine"
  c.warmup_steps = 100
  c.final_lr_fraction = 0.01
  c.lr_multipliers = [1 / 3, 1.0, 3.0]  # × each optimizer's relu2 default learning rate
  # While an entry's chosen rate is the grid's lowest (highest), train one more rate
  # below (above) it, up to this many per side (analysis/atlas_runs.extend_grid).
  c.grid_extensions = 2
  c.entries = ml_collections.ConfigDict(
    {name.replace("/", "_"): {"optimizer": opt, "overrides": dict(o)} for name, opt, o in ENTRIES}
  )
  c.task = ml_collections.ConfigDict(
    dict(task="teacher", input_dim=8, n_train=256, n_test=1024, teacher_width=4, seed=0)
  )
  # A run counts as converged when its train loss is below this fraction of the
  # zero predictor's; unconverged seeds are excluded from every comparison.
  c.converged_fraction = 0.01
  # A barrier counts as ≈ 0 below this fraction of the zero predictor's loss
  # (the cluster threshold: entries connected at ≈ 0 barrier form one region).
  c.connected_tol = 0.02
  c.points = 17  # Path points per pair (aligned linear paths).
  c.n_resamples = 1000  # Seed resamples for every interval.
  c.min_pairs = 3  # Fewer converged pairs than this: inconclusive.
  # Alignment γ and descent potential Φ of each chosen run's update at every kept
  # checkpoint (analysis/update_geometry.py), on minibatches of this many train
  # rows (the runs themselves are full-batch), the same minibatches for every entry.
  c.geometry_batch = 32
  c.geometry_minibatches = 8
  if arg.full:
    c.seeds = 8
    c.num_steps = 4000
    c.lr_multipliers = [0.1, 1 / 3, 1.0, 3.0, 10.0]
    c.points = 33
  if arg.runlocal:
    c.width = 8
    c.seeds = 2
    c.num_steps = 60
    c.warmup_steps = 5
    c.lr_multipliers = [0.5, 1.0]
    c.points = 5
    c.n_resamples = 50
    c.min_pairs = 1
    c.geometry_batch = 16
    c.geometry_minibatches = 2
    c.converged_fraction = 1.0  # A few steps cannot converge: the gate is tested on its own.
    keep = ("adamw", "muon", "freon_q2_3")
    c.entries = ml_collections.ConfigDict({k: v for k, v in c.entries.items() if k in keep})
    c.task.update(dict(input_dim=4, n_train=64, n_test=64))
  return c


# The GPT-2 entries: (entry name, optimizer of configs/gpt2.py or nexus_OPT for
# Nexus around OPT, train.py overrides as a nested dict of its config). Each optimizer's
# learning rate and λ are configs/gpt2.py's (_GPT2_LR, _GPT2_WD): the grid is
# centred on the rate that trains the tiny model, and λ sets each ball.
_POLAR_SCALE = {"learning_rate": 0.02, "weight_decay": 0.1}
GPT2_ENTRIES = (
  ("adamw", "adamw", {}),
  ("lion", "lion", {}),
  # ∇K of the nuclear and row norms has entries of size ~1/√n, not Lion's ±1: at Lion's rate
  # (3e-4 × 1/3, 1, 3) neither trained in 250 steps (measured: no converged run for nuclear,
  # the grid's edge for rownorm), so they take Muon's rate and λ (the same ∇K scale).
  ("lion_k_nuclear", "lion_k", {"optimizer": {"k": "nuclear", **_POLAR_SCALE}}),
  ("lion_k_rownorm", "lion_k", {"optimizer": {"k": "rownorm", **_POLAR_SCALE}}),
  ("muon", "muon", {}),
  ("normuon", "normuon", {}),
  ("polargrad", "polargrad", {}),
  ("kaon", "kaon", {}),
  ("freon_q2/3", "freon", {"optimizer": {"q": 2 / 3}}),
  ("freon_q2", "freon", {"optimizer": {"q": 2.0}}),
  ("pion", "pion", {}),
  ("sf_normuon", "sf_normuon", {}),
  ("mimuon", "mimuon", {}),
  # Cross-fitting needs two microbatches per step (optimizers/crossfit.py).
  ("crossfit_adamw", "crossfit_adamw", {"grad_accum_steps": 2}),
  ("symmetric", "symmetric", {}),
  ("scion", "scion", {}),
  ("dion", "dion", {}),
  ("nexus_adamw", "nexus_adamw", {}),
  ("nexus_muon", "nexus_muon", {}),
)


def gpt2_config(arg) -> ml_collections.ConfigDict:
  """The GPT-2 atlas (analysis/atlas_gpt2.py). Every run is one train.py
  workdir of configs/gpt2.py (one seed each); the learning-rate grid is
  trained at seed 0 only (grown past an edge choice, `grid_extensions`), the
  chosen rate at seeds 1..seeds−1 as well (the grid at every seed would triple
  the budget). Default: 19 entries × 3 rates, 13 extension rates and 2 more
  seeds each, 108–110 runs of 250 steps, a checkpoint every 50: 45 min 12 s on
  2 CPU cores (2026-12-03; 35 min 6 s before the checkpoints every 50 steps and γ/Φ at
  each), a rerun that trains nothing 6.5 minutes (before them); full: 5 rates, 5
  seeds, 1000 steps of the 128-token windows."""
  c = ml_collections.ConfigDict()
  c.model = "gpt2"
  c.train_config = "configs/gpt2.py"
  c.size = "tiny"
  c.seeds = 3  # ≥ 3 for an interval; seed s is one init and data order for every entry
  c.num_steps = 250
  c.batch = 12  # sequences per step: a multiple of the 3 sources (Nexus reads batch/3 of each)
  c.seq_len = 64
  c.parallel = 2  # train.py processes at once
  c.runlocal = False  # the runs use configs/gpt2.py:runlocal (a small corpus)
  c.lr_multipliers = [1 / 3, 1.0, 3.0]  # × each optimizer's configs/gpt2.py learning rate
  c.grid_extensions = 2  # more rates beyond an edge choice, per side (seed 0 only)
  c.similarity_every = 125  # the sources' gradient-cosine matrix (the final one is in the summary)
  # Every run keeps a checkpoint each this many steps (all of them), and γ and Φ of the
  # chosen runs' updates are measured at each (analysis/atlas_gpt2_geometry.py).
  c.geometry_every = 50
  c.inner_learning_rate = 0.02  # Nexus's γ and k (configs/nexus_mixture.py's)
  c.inner_steps = 3
  c.entries = ml_collections.ConfigDict(
    {
      name.replace("/", "_"): {"optimizer": opt, "overrides": dict(o)}
      for name, opt, o in GPT2_ENTRIES
    }
  )
  # A run counts (is "converged") when its validation loss is finite and below
  # this fraction of the uniform predictor's ln(vocab): a diverged or untrained
  # run enters no comparison.
  c.converged_fraction = 0.8
  # A barrier is ≈ 0 below this many nats (configs/gpt2_spectra.py's barrier_tolerance).
  c.connected_tol = 0.05
  # Cross-entry pairs: "all" (every seed of e with every seed of f, S² pairs: other
  # inits and data orders, like the same-entry pairs, so the diagonal and the rest of
  # the barrier matrix measure one thing) or "same_seed" (seed s with seed s: one init
  # and data order, S pairs, a different question: measured 2026-12-03, same-seed
  # cross barriers had a median 0.25 nats against 0.9 for Muon's own seeds).
  c.cross_pairs = "all"
  c.points = 5  # path points per pair (aligned linear paths)
  c.eval_batches = 2  # validation batches per source for barriers and function distances
  c.eval_batch_size = 8
  c.n_resamples = 1000
  c.min_pairs = 3
  if arg.full:
    c.seeds, c.num_steps, c.batch, c.seq_len = 5, 1000, 24, 128
    c.lr_multipliers = [0.1, 1 / 3, 1.0, 3.0, 10.0]
    c.similarity_every, c.points, c.eval_batches, c.geometry_every = 200, 9, 4, 250
  if arg.runlocal:
    c.seeds, c.num_steps, c.batch, c.seq_len, c.runlocal = 2, 6, 6, 32, True
    c.lr_multipliers = [1.0, 3.0]
    c.similarity_every, c.points, c.eval_batches, c.eval_batch_size = 3, 3, 1, 4
    c.geometry_every = 3
    c.n_resamples, c.min_pairs = 50, 1
    c.converged_fraction = 1.0  # six steps: every finite run counts
    keep = ("adamw", "muon", "nexus_adamw")
    c.entries = ml_collections.ConfigDict({k: v for k, v in c.entries.items() if k in keep})
  return c
