r"""The optimizer atlas: where every optimizer's solutions land, on one relu2 task.

    python -m analysis.atlas --config=configs/atlas.py --workdir=runs/atlas
    python -m analysis.atlas --config=configs/atlas.py:full --workdir=runs/atlas_full

Every entry of ``entries`` is trained (train.py, configs/relu2.py, ``seeds``
vmapped seeds per run) at each learning rate of its grid, the same steps and
schedule for all; the best learning rate per entry is chosen on the
validation half of the test inputs (never the train loss), and the chosen
runs are compared: barriers after alignment between all pairs, every entry's
ball evaluated at every other's solutions, spectra, function distances,
clusters, and whether ball distance predicts the cross barrier
(analysis/atlas.py).

Variants: (none) the default, ≤ 15 minutes on 2 CPU cores; full (more seeds,
steps and learning rates); runlocal (a tiny atlas for tests). Fields can be
overridden, e.g. --config.seeds=8 or --config.entries.adamw.lr_multipliers=...

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
  arg = parse_arg(arg, full=False, runlocal=False)
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
    c.converged_fraction = 1.0  # A few steps cannot converge: the gate is tested on its own.
    keep = ("adamw", "muon", "freon_q2_3")
    c.entries = ml_collections.ConfigDict({k: v for k, v in c.entries.items() if k in keep})
    c.task.update(dict(input_dim=4, n_train=64, n_test=64))
  return c
