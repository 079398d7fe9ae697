r"""GPT-2 on the built-in text corpus (prose + code + math), data parallel.

    python train.py --config=configs/gpt2.py:size=tiny,optimizer=muon --workdir=runs/gpt2_muon
    python train.py --config=configs/gpt2.py:size=tiny,nexus,similarity=100 --workdir=runs/gpt2_nexus

Variants (after the ":", comma separated): size=tiny|small|124m|... (models/gpt2.py
CONFIGS), optimizer=NAME (adamw|lion|lion_k|muon|sgd or a zoo member: polargrad|kaon|freon|normuon|sf_normuon|mimuon|dion|pion|scion|symmetric), lr=η, wd=λ, steps=N, batch=B
(sequences per optimizer step, over all devices), accum=k (B is split into k
microbatches, accumulated inside the step), seq_len=T, tokenizer=bytes|bpe|gpt2, source=builtin|shards:PATTERN|tfds:NAME|text:GLOB,
sources=prose+code+math, weights=5+3+2 (mixture proportions; empty = uniform),
nexus (wrap the optimizer in Nexus, optimizers/nexus.py: one batch per source per
step, batch/K sequences each, so the same batch·seq_len tokens per step as
without it), inner_lr=γ, inner_steps=k, similarity=N (log the sources' K×K
gradient-cosine matrix every N steps; 0 = off), runlocal (a small, fast run for tests).
Any field can then be overridden: --config.optimizer.b2=0.95 --config.eval_every=50.

The batch is sharded over a "data" axis of all devices; GPT-2 runs train one
seed (num_seeds = 1): run seeds as separate workdirs (--config.seed=1).
"""

import ml_collections

from configs.common import optimizer_config, or_default, parse_arg

# A learning rate per optimizer that trains the tiny/small models on bytes.
_GPT2_LR = {
  "adamw": 3e-3,
  "lion": 3e-4,
  "lion_k": 3e-4,
  "muon": 0.02,
  "sgd": 0.3,
  **dict.fromkeys(
    ("polargrad", "kaon", "freon", "normuon", "sf_normuon", "mimuon", "dion", "symmetric"), 0.02
  ),
  "pion": 1e-3,  # the sheet's 1e-3 to 5e-4 (a multiplicative step)
  "scion": 0.05,
  "crossfit_adamw": 3e-3,  # AdamW's
}
_GPT2_WD = {
  "adamw": 0.1,
  "lion": 1.0,
  "lion_k": 1.0,
  "muon": 0.1,
  "sgd": 0.0,
  **dict.fromkeys(("polargrad", "kaon", "freon", "normuon", "mimuon", "symmetric"), 0.1),
  "sf_normuon": 0.05,
  "dion": 0.01,
  "pion": 0.0,  # Pion matrices take none; this would be the AdamW leaves'
  "scion": 0.0,  # Scion's ball is its radius; this would be the AdamW leaves'
  "crossfit_adamw": 0.1,
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = parse_arg(
    arg,
    size="tiny",
    optimizer="adamw",
    lr=float,
    wd=float,
    steps=int,
    batch=int,
    accum=1,
    seq_len=int,
    tokenizer="bytes",
    source="builtin",
    sources="prose+code+math",
    weights="",
    nexus=False,
    inner_lr=float,
    inner_steps=3,
    similarity=int,
    runlocal=False,
  )
  config = ml_collections.ConfigDict()
  config.seed = 0  # init, dropout and data order
  config.init_seed = -1  # >= 0: the parameters' init from it instead (a shared start)
  # A GPT-2 workdir: start from its parameters at checkpoint init_from_step (-1: its
  # latest) instead of an init, with a fresh optimizer state and this run's own data order,
  # dropout and schedule ("spawning" from a common early checkpoint). Same model shapes.
  config.init_from = ""
  config.init_from_step = -1
  config.num_seeds = 1  # GPT-2: one seed per workdir
  config.num_steps = or_default(arg.steps, 40 if arg.runlocal else 1000)
  config.batch_size = or_default(arg.batch, 8 if arg.runlocal else 32)  # sequences per step
  if arg.nexus and arg.batch is None:  # a multiple of the number of sources K
    k = len([x for x in arg.sources.split("+") if x.strip()])
    config.batch_size = -(-config.batch_size // k) * k
  config.grad_accum_steps = arg.accum
  # The ("data", "fsdp") device mesh (-1: the rest); fsdp = 1 is plain data parallelism.
  config.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1})
  # Several processes (hosts) per run (training/distributed.py): unset = one process, or
  # the detected cluster's (Cloud TPU pod, SLURM, Open MPI, Kubernetes) when it has more.
  config.distributed = ml_collections.ConfigDict(
    dict(
      coordinator_address="",  # "HOST:PORT" of process 0 (or JAX_COORDINATOR_ADDRESS)
      num_processes=0,  # 0: unset (JAX_NUM_PROCESSES, or the cluster's)
      process_id=-1,  # -1: unset (JAX_PROCESS_ID, or the cluster's)
      local_device_ids="",  # "0,1": this process's devices (JAX_LOCAL_DEVICE_IDS)
      cluster="auto",  # "off": never use a detected cluster
      initialization_timeout=300,  # s for every process to join
      heartbeat_timeout=100,  # s: jax's own failure detection
      peer_timeout=30,  # s without a peer's heartbeat before this process stops
    )
  )
  config.log_every = 10 if arg.runlocal else 50
  config.eval_every = 20 if arg.runlocal else 200
  config.eval_batches = 2 if arg.runlocal else 8  # fixed validation batches per source
  config.eval_batch_size = 8 if arg.runlocal else 16
  config.checkpoint_every = 20 if arg.runlocal else 500
  # Every N steps the K×K cosine matrix of the sources' gradients on the fixed
  # validation batches (analysis/source_geometry.py) goes to metrics.jsonl; 0 = off.
  config.similarity_every = or_default(arg.similarity, 0 if arg.runlocal else config.eval_every)
  config.keep_checkpoints = 2
  # Peak FLOP/s of all devices together for MFU; 0 = MFU not logged; < 0 = measure
  # it (a jitted f32 matmul, training.perf.peak_flops), e.g. on a CPU.
  config.peak_flops = 0.0

  config.model = ml_collections.ConfigDict(
    dict(name="gpt2", size=arg.size, dropout=0.0, dtype="float32", remat=False)
  )

  # data.source picks the corpus (data/corpus.py): "builtin" (Python's docs, its
  # standard library and generated arithmetic: no download), "shards:PATTERN"
  # (nanoGPT/llm.c uint16 .bin files; {split} in PATTERN becomes train / val),
  # "tfds:NAME[:SPLIT]" (a prepared tfds dataset in data.data_dir, no
  # TensorFlow) or "text:GLOB[+GLOB...]" (your own UTF-8 files, a source per glob).
  # data.sources, data.weights and data.ood_sources name the built-in sources.
  config.data = ml_collections.ConfigDict(
    dict(
      source=arg.source,
      data_dir="",
      sources=arg.sources,
      weights=arg.weights,
      ood_sources="code_ood+math_ood",
      tokenizer=arg.tokenizer,
      bpe_vocab_size=4096,
      seq_len=or_default(arg.seq_len, 32 if arg.runlocal else 128),
      # Characters kept per source (0 = all): the first documents in a fixed order.
      max_chars=200_000 if arg.runlocal else 0,
    )
  )

  config.optimizer = optimizer_config(
    arg.optimizer,
    learning_rate=or_default(arg.lr, _GPT2_LR[arg.optimizer]),
    weight_decay=or_default(arg.wd, _GPT2_WD[arg.optimizer]),
  )
  config.optimizer.weight_decay_mask = "matrices"
  config.optimizer.schedule = "warmup_cosine"
  # 50 warmup steps, or a tenth of a shorter run (a warmup longer than the run is refused).
  config.optimizer.warmup_steps = 2 if arg.runlocal else min(50, config.num_steps // 10)
  config.optimizer.final_lr_fraction = 0.1
  config.optimizer.grad_clip_norm = 1.0
  if "adam_learning_rate" in config.optimizer:  # Muon-routed: embeddings, head and
    config.optimizer.adam_learning_rate = _GPT2_LR["adamw"]  # vectors get AdamW
    if "adam_weight_decay" in config.optimizer:
      config.optimizer.adam_weight_decay = 0.0
  if arg.optimizer == "adamw":
    config.optimizer.b2 = 0.95
  if arg.optimizer == "symmetric":
    # The authors' η for the embedding and head classes. Their hybrid step on the tied
    # wte has σ_max ν = ‖rownorm(m)‖_* (up to √(V·d) = 128 here), so at the matrices'
    # 0.02 it grew wte to RMS 2.2 and σ_max 102 in 250 steps (AdamW, Muon: 0.13 and 15)
    # and two seeds were 3.8 nats apart after alignment; at 1e-3: RMS 0.16, σ_max 5.7,
    # 0.81 nats, validation loss 2.12 instead of 2.33 (measured 2026-12-03, atlas:gpt2).
    config.optimizer.embed_learning_rate = 1e-3
    config.optimizer.head_learning_rate = 1e-3
  # Nexus (optimizers/factory.py NEXUS_DEFAULTS): with enabled=True the data
  # pipeline yields one batch of batch_size/K sequences per source per step (K =
  # number of data.sources); the step takes k = inner_steps normalized-gradient
  # steps of γ = inner_learning_rate on sampled sources, and the chain above sees
  # the displacement. Tokens read per step: batch_size·seq_len, as without Nexus.
  config.optimizer.nexus = ml_collections.ConfigDict(
    dict(
      enabled=arg.nexus,
      inner_learning_rate=or_default(arg.inner_lr, 0.02),
      inner_steps=arg.inner_steps,
      normalize="global",
      source_order="random",
      seed=0,
      # "random_direction" | "same_source": a control arm with Nexus's
      # pseudo-gradient norm but no alignment pressure (optimizers/nexus.py).
      control="none",
    )
  )
  return config
