r"""Two-layer ReLU network on a synthetic task: the default trains in seconds on a CPU.

    python train.py --config=configs/relu2.py:optimizer=muon,width=512 \
        --workdir=runs/muon512 --config.seed=3

Variants (after the ":", comma separated): optimizer=NAME (adamw|lion|lion_k|muon|sgd or a zoo member: polargrad|kaon|freon|normuon|sf_normuon|mimuon|dion|pion|scion|symmetric),
width=M, lr=η, wd=λ, task=teacher|teacher_sign|random_labels|random_regression,
seeds=S (many networks in one program), chunk=k (seeds per vmapped chunk,
0 = all; ~8 is fastest on a CPU), steps=N, runlocal (a tiny run for tests).
Any field can then be overridden: --config.optimizer.b2=0.95.
"""

import ml_collections

from configs.common import optimizer_config, or_default, parse_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = parse_arg(
    arg,
    optimizer="adamw",
    width=256,
    lr=float,
    wd=float,
    task="teacher",
    seeds=1,
    chunk=0,
    steps=int,
    runlocal=False,
  )
  config = ml_collections.ConfigDict()
  config.seed = 0  # Seed i of num_seeds uses seed + i: init and data order.
  config.num_seeds = arg.seeds
  # 0: vmap all seeds at once (GPU/TPU). On a CPU, chunks of ~8 seeds keep the
  # activations in cache and are several times faster for many seeds.
  config.seed_chunk_size = arg.chunk
  config.num_steps = or_default(arg.steps, 200 if arg.runlocal else 2000)
  config.batch_size = 0  # 0 = full batch; else minibatches in a per-seed order.
  config.log_every = 20 if arg.runlocal else 100
  config.checkpoint_every = 100 if arg.runlocal else 500
  config.keep_checkpoints = 3

  config.model = ml_collections.ConfigDict(
    dict(
      name="relu2",
      width=arg.width,
      out_dim=1,
      use_bias=True,
      parametrization="standard",
      bias_init_std=0.0,
    )
  )

  classification = arg.task in ("teacher_sign", "random_labels")
  config.data = ml_collections.ConfigDict(
    dict(
      task=arg.task,
      loss="logistic" if classification else "squared",
      input_dim=8,
      n_train=256,
      n_test=1024,
      teacher_width=4,
      input_dist="gaussian",
      label_noise=0.0,
      seed=0,
    )
  )  # The dataset is shared by all seeds: only init and order differ.
  if arg.task == "random_regression":
    config.data.n_train, config.data.input_dim = 16, 2
  if arg.runlocal:
    config.model.width = min(arg.width, 32)
    config.data.n_train, config.data.n_test, config.data.input_dim = 64, 64, 4

  config.optimizer = optimizer_config(arg.optimizer, learning_rate=arg.lr, weight_decay=arg.wd)
  return config
