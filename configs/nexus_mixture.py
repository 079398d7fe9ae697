r"""Does Nexus reach the same loss with closer source minima, and is a gain due
to alignment? AdamW, Nexus(AdamW), its control arm, Muon, Nexus(Muon) and its
control on the prose + code + math mixture, plus a γ × k grid around AdamW.

    python -m analysis.nexus_mixture --config=configs/nexus_mixture.py --workdir=runs/nexus

Trains the tiny GPT-2 (configs/gpt2.py, bytes, the built-in corpus) with each
arm and seed as its own workdir (DIR/runs/ARM_sSEED, `python train.py`;
finished runs are skipped on a rerun), all arms on the same token budget
(steps × batch × seq_len tokens read), then measures at every final checkpoint
the per-source validation loss, the OOD loss, the sources' gradient-cosine
matrix (train.py, on the validation batches) and the closeness of the sources'
minima (analysis.source_geometry.source_minima) and the exact-match accuracy
on the held-out arithmetic families (analysis.exact_match). Writes
DIR/report.md, DIR/nexus.json and DIR/*.png. 4 arms × 3 seeds took about 9
minutes on a 2-core CPU; the control arms cost about twice a Nexus arm (2k
gradients a step) and each grid point one Nexus arm per seed.

Variants: size=tiny|small, steps=N, seeds=0+1+2, inner_lr=γ, full (5 seeds and
a 3 × 3 γ × k grid: the claims' verdicts), runlocal (a few steps on a small
corpus, for tests). Fields can be overridden, e.g.
--config.arms=adamw+nexus_adamw --config.grid.bases= --config.minima.steps=100.
"""

import ml_collections

from configs.common import or_default, parse_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = parse_arg(
    arg, size="tiny", steps=int, seeds=str, inner_lr=float, full=False, runlocal=False
  )
  config = ml_collections.ConfigDict()
  # '+'-separated arms: an optimizer of configs/gpt2.py, nexus_OPT for
  # Nexus(OPT), nexuscontrol_OPT for its control arm (analysis/nexus_runs.py).
  # Each base optimizer is compared with its Nexus arm, and Nexus with its control.
  config.arms = "adamw+nexus_adamw+nexuscontrol_adamw" + (
    "" if arg.runlocal else "+muon+nexus_muon+nexuscontrol_muon"
  )
  # config.seed of the runs: paired across arms (the same init). Intervals need
  # at least 3 (analysis.stats.MIN_SEEDS); `full` has 5.
  config.seeds = or_default(
    arg.seeds, "0+1" if arg.runlocal else "0+1+2+3+4" if arg.full else "0+1+2"
  )
  config.size = arg.size
  config.steps = or_default(arg.steps, 6 if arg.runlocal else 600)
  config.batch = 6 if arg.runlocal else 24  # sequences per step; a multiple of 3 sources
  config.seq_len = 32 if arg.runlocal else 128
  config.runlocal = arg.runlocal  # the runs use configs/gpt2.py:runlocal
  # Nexus's inner step γ and steps k (optimizers/nexus.py). γ = 0.02 keeps the
  # in-distribution loss of the base optimizer on the tiny model (600 steps,
  # seed 0: γ = 0.2 raised it 2.5% / 3.7% for AdamW / Muon, γ = 1 by 39% / 27%);
  # not tuned further.
  config.inner_learning_rate = or_default(arg.inner_lr, 0.02)
  config.inner_steps = 3
  # The control arms' pseudo-gradient (optimizers/nexus.py CONTROLS):
  # random_direction keeps Nexus's norm and first-order term and randomizes only
  # the direction of its O(γ) alignment correction, so it isolates alignment;
  # same_source (k steps on one source) also changes which data a step uses.
  config.control = "random_direction"
  # The γ × k grid at the same token budget: Nexus(BASE) at every (γ, k) below
  # besides the main one, for BASE in bases; the report plots each point's
  # in-distribution loss change against its OOD loss change (both vs BASE).
  # Empty bases (or lists): no grid.
  config.grid = ml_collections.ConfigDict(
    dict(
      bases="adamw",
      inner_learning_rates="0.1" if arg.runlocal else "0.005+0.02+0.08" if arg.full else "0.08",
      inner_steps="2" if arg.runlocal else "2+3+6" if arg.full else "3",
    )
  )
  config.similarity_every = 3 if arg.runlocal else 100  # gradient-cosine logging interval
  config.train_flags = ""  # extra train.py flags for every run
  config.parallel_runs = 1  # train.py processes at once (each uses every core)

  # The closeness of the sources' minima from each final checkpoint: Adam on
  # each source alone (the same for every arm: it measures the point, not the
  # optimizer) on its first num_batches × batch_size training windows.
  config.minima = ml_collections.ConfigDict(
    dict(
      steps=5 if arg.runlocal else 50,
      learning_rate=1e-3,
      batch_size=4 if arg.runlocal else 16,
      num_batches=1 if arg.runlocal else 2,
      points=3 if arg.runlocal else 9,  # on the segment between two source minima
      proxy_step=1e-2,
    )
  )  # γ of the first-order proxy L_s(θ) − L_s(θ − γ∇L)
  # "About equal" in-distribution loss: |Nexus − base| ≤ this × base (mean over seeds).
  config.equal_loss_tolerance = 0.02
  # Exact-match accuracy on the held-out arithmetic families (percent, gcd) by
  # greedy decoding (analysis/exact_match.py): num_per_family fresh problems,
  # "worked" (given the solution, state the answer) and "question" (solve it)
  # prompts, max_new_PROMPT new tokens (the prompt keeps its last seq_len − max_new).
  config.exact_match = ml_collections.ConfigDict(
    dict(
      num_per_family=4 if arg.runlocal else 64,
      prompts="worked+question",
      max_new_worked=8,
      max_new_question=16 if arg.runlocal else 72,
      batch_size=8 if arg.runlocal else 64,
    )
  )
  config.n_resamples = 2000  # seed resamples of every interval (analysis.stats.bootstrap)
  return config
