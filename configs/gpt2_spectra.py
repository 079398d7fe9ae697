r"""Spectra along linear paths between GPT-2 solutions of AdamW and Muon.

    python -m analysis.gpt2_spectra --config=configs/gpt2_spectra.py --workdir=runs/gpt2_spectra

Trains the tiny GPT-2 (configs/gpt2.py, bytes tokenizer, the built-in prose +
code + math corpus) with each optimizer and seed as its own workdir
(DIR/runs/OPT_sSEED, by `python train.py`; finished runs are skipped on a
rerun), then evaluates linear paths between same-optimizer, cross-optimizer
and (as a control) self pairs: validation loss, and σ_max, stable rank and
effective rank of every attention and MLP matrix along the path. Writes
DIR/report.md, DIR/spectra.json and DIR/*.png. The default takes a few minutes
on a 2-core CPU.

Variants: size=tiny|small, steps=N, points=P (path points), runlocal (a few
steps, for tests). Fields can be overridden: --config.optimizers=adamw+muon+lion.
"""

import ml_collections

from configs.common import or_default, parse_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = parse_arg(arg, size="tiny", steps=int, points=int, runlocal=False)
  config = ml_collections.ConfigDict()
  config.optimizers = "adamw+muon"  # '+'-separated; every pair of them is compared
  config.seeds = "0+1"  # config.seed of the runs of each optimizer
  config.size = arg.size
  config.steps = or_default(arg.steps, 8 if arg.runlocal else 600)
  config.batch = 8 if arg.runlocal else 16
  config.seq_len = 32 if arg.runlocal else 128
  config.runlocal = arg.runlocal  # the runs use configs/gpt2.py:runlocal (small corpus)
  # Extra train.py flags for every run, e.g. "--config.optimizer.weight_decay=0.0".
  config.train_flags = ""
  config.parallel_runs = 2 if arg.runlocal else 1  # train.py processes at once
  config.points = or_default(arg.points, 5 if arg.runlocal else 17)
  config.include_self = True  # the path from a run to itself: constant spectra
  config.eval_batches = 1 if arg.runlocal else 4  # validation batches per source
  config.eval_batch_size = 8 if arg.runlocal else 16
  # "Near-monotone": a cross path's statistic may step against its overall
  # direction by at most this fraction of |end − start| (or of the endpoint value).
  config.monotone_tolerance = 0.02
  return config
