"""The ONE builder from a config to (model, data, loss, metrics).

The trainer, every analysis module and the tests call these functions, so the
path from a config to what is trained and measured exists once:

    task = relu2_task(config)          # model, dataset, loss, metric, ...
    model = gpt2_model(config, vocab)  # the flax GPT-2 of a config
    data = gpt2_data(config, workdir)  # tokenizer, training loader, eval batches

Array names carry their shape (x_NxD); the letters are defined once, in
ARCHITECTURE.md ("Shape suffixes").
"""

import dataclasses
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from data import batching, corpus, synthetic, text_pipeline, tokenizers
from models import gpt2, relu2
from training.errors import UserError, one_line


def plus_list(text: str) -> list[str]:
  """ "a+b+c" -> ["a", "b", "c"] (the list syntax of config strings)."""
  return [x.strip() for x in text.split("+") if x.strip()]


# ---------------------------------------------------------------------------
# relu2: a two-layer ReLU network on a synthetic task, all in memory.

MODEL_KEYS = ("width", "out_dim", "use_bias", "parametrization", "bias_init_std")
TASK_KEYS = (
  "task",
  "input_dim",
  "n_train",
  "n_test",
  "teacher_width",
  "input_dist",
  "label_noise",
  "seed",
)


class Relu2Task(NamedTuple):
  """A relu2 config's model and data. metric(params, (x, y)) -> {"loss"[,
  "accuracy"]}; train/test are (x_NxD, y_NxO) and (x_MxD, y_MxO) jax arrays."""

  model: Any
  dataset: synthetic.Dataset
  loss: Callable[[jax.Array, jax.Array], jax.Array]
  classification: bool
  train: tuple[jax.Array, jax.Array]
  test: tuple[jax.Array, jax.Array]
  metric: Callable[[Any, tuple], dict]


@functools.cache
def _metric(model_key: tuple, loss_name: str, classification: bool):
  # Cached: jitted evaluators take the metric as a static argument, so one
  # function object per (model, loss) avoids recompiling.
  model = relu2.make_model(**dict(zip(MODEL_KEYS, model_key)))
  loss = synthetic.get_loss(loss_name)

  def metric(params, batch):
    x_BxD, y_BxO = batch
    pred_BxO = model.apply({"params": params}, x_BxD)
    out = {"loss": loss(pred_BxO, y_BxO)}
    if classification:
      out["accuracy"] = synthetic.sign_accuracy(pred_BxO, y_BxO)
    return out

  return metric


def relu2_task(config) -> Relu2Task:
  """The model, dataset, loss and metric of a relu2 config (or config.json dict)."""
  m, d = config["model"], config["data"]
  model_key = tuple(m[k] for k in MODEL_KEYS)
  model = relu2.make_model(**dict(zip(MODEL_KEYS, model_key)))
  dataset = synthetic.make_task(**{k: d[k] for k in TASK_KEYS})
  classification = d["task"] in synthetic.CLASSIFICATION_TASKS
  train = (jnp.asarray(dataset.x_train_NxD), jnp.asarray(dataset.y_train_NxO))
  test = (jnp.asarray(dataset.x_test_TxD), jnp.asarray(dataset.y_test_TxO))
  return Relu2Task(
    model,
    dataset,
    synthetic.get_loss(d["loss"]),
    classification,
    train,
    test,
    _metric(model_key, d["loss"], classification),
  )


def zero_predictor_loss(config) -> float:
  """The train loss of f ≡ 0 on the config's own task (inputs and targets as
  trained): the scale against which "≈ 0" loss and barriers are judged."""
  task = relu2_task(config)
  y_NxO = task.train[1]
  return float(task.loss(jnp.zeros_like(y_NxO), y_NxO))


class Experiment(NamedTuple):
  """What the relu2 trainer needs, for one seed (vmapped over seeds).

  init_params(key) -> params; loss_fn(params, batch, rng) -> (loss, aux);
  get_batch(data_key, step) -> batch, jittable (the order is a function of the
  seed's data key and the step: resumable and vmappable); evaluate(params) ->
  dict of scalars, jittable; iterator_state(step) -> the JSON checkpointed
  beside the train state (and checked on restore).
  """

  init_params: Callable[[jax.Array], Any]
  loss_fn: Callable[[Any, Any, jax.Array], tuple[jax.Array, dict]]
  get_batch: Callable[[jax.Array, jax.Array], Any]
  evaluate: Callable[[Any], dict]
  iterator_state: Callable[[int], dict]


def relu2_experiment(config) -> Experiment:
  task = relu2_task(config)
  (x_NxD, y_NxO), (x_MxD, y_MxO) = task.train, task.test
  n, batch_size = x_NxD.shape[0], config.batch_size

  def loss_fn(params, batch, rng):
    del rng  # Deterministic model; the RNG is for models with dropout.
    x_BxD, y_BxO = batch
    return task.loss(task.model.apply({"params": params}, x_BxD), y_BxO), {}

  def get_batch(data_key, step):
    if batching.is_full_batch(n, batch_size):
      return x_NxD, y_NxO
    idx_B = batching.batch_indices(data_key, step, n, batch_size)
    return x_NxD[idx_B], y_NxO[idx_B]

  def evaluate(params):
    out = {}
    for split, x, y in (("train", x_NxD, y_NxO), ("test", x_MxD, y_MxO)):
      if x.shape[0] == 0:
        continue
      for name, value in task.metric(params, (x, y)).items():
        out[f"{split}_{name}"] = value
    return out

  return Experiment(
    init_params=lambda key: task.model.init(key, x_NxD[:1])["params"],
    loss_fn=loss_fn,
    get_batch=get_batch,
    evaluate=evaluate,
    iterator_state=lambda step: batching.iterator_state(step, n, batch_size),
  )


# ---------------------------------------------------------------------------
# GPT-2: a flax model over a text corpus (data/corpus.py picks the loader).


def gpt2_model(config, vocab_size: int, dropout: float | None = None) -> gpt2.GPT2:
  """The GPT-2 of a config; ``dropout`` overrides the config's (0 for analysis)."""
  m = config["model"]
  return gpt2.GPT2(
    dataclasses.replace(
      gpt2.CONFIGS[m["size"]],
      vocab_size=vocab_size,
      dropout=m["dropout"] if dropout is None else dropout,
      dtype=jnp.dtype(m["dtype"]),
      remat=m["remat"],
    )
  )


def data_source(config) -> str:
  """config.data.source; "builtin" for configs written before the field existed."""
  return config["data"].get("source", "builtin")


def _corpus_kwargs(config) -> dict:
  d = config["data"]
  return dict(max_chars=d["max_chars"], data_dir=d.get("data_dir") or None)


def gpt2_tokenizer(config, workdir: Path | None):
  """The run's tokenizer; a BPE one is trained on the training texts once and
  cached in WORKDIR/tokenizer (the analysis reads it back from there)."""
  d = config["data"]
  source = data_source(config)
  vocab = corpus.implied_vocab_size(source)
  if vocab is not None:  # pre-tokenized shards: the ids are the data
    return _Pretokenized(vocab)
  if d["tokenizer"] != "bpe":
    return tokenizers.get_tokenizer(d["tokenizer"])
  if workdir is None:
    raise UserError("A BPE run's tokenizer lives in its workdir; pass the workdir.")
  texts = None
  if not (Path(workdir) / "tokenizer").exists():
    texts = corpus.training_texts(
      source, plus_list(d["sources"]), d["max_chars"], data_dir=d.get("data_dir") or None
    )
  return tokenizers.get_tokenizer(
    "bpe", workdir=str(Path(workdir) / "tokenizer"), vocab_size=d["bpe_vocab_size"], texts=texts
  )


class _Pretokenized:
  """The tokenizer of pre-tokenized shards: only the vocabulary size is known."""

  def __init__(self, vocab_size: int):
    self.vocab_size, self.name, self.eot_id = vocab_size, f"pretokenized-{vocab_size}", None


def gpt2_windows(
  config, split: str, tokenizer, names: list[str] | None = None
) -> dict[str, text_pipeline.TokenWindows]:
  """{source: TokenWindows} of a split ("train", "validation"; "test" for the
  OOD names) of the config's corpus."""
  d = config["data"]
  return corpus.load_windows(
    data_source(config),
    split,
    tokenizer,
    d["seq_len"],
    sources=names if names is not None else plus_list(d["sources"]),
    vocab_size=tokenizer.vocab_size,
    **_corpus_kwargs(config),
  )


def source_names(config) -> list[str]:
  """The training sources' names (what per-source metrics are keyed by)."""
  return corpus.source_names(data_source(config), plus_list(config["data"]["sources"]))


def ood_names(config) -> list[str]:
  """OOD sources exist for the built-in corpus only."""
  if data_source(config) != "builtin":
    return []
  return plus_list(config["data"]["ood_sources"])


def stack_eval_batches(windows, batch_size: int, num_batches: int) -> dict[str, np.ndarray]:
  """{"inputs", "targets": (L, E, T)}: the first L ≤ num_batches batches in order."""
  batches = list(text_pipeline.eval_batches(windows, batch_size, num_batches))
  return {k: np.stack([b[k] for b in batches]) for k in ("inputs", "targets")}


def eval_batches(
  config,
  split: str,
  tokenizer,
  names: list[str] | None = None,
  batch_size: int | None = None,
  num_batches: int | None = None,
) -> dict[str, dict[str, np.ndarray]]:
  """{source: {"inputs", "targets": (L, E, T)}}, the same every call."""
  windows = gpt2_windows(config, split, tokenizer, names)
  e = batch_size or config["eval_batch_size"]
  n = num_batches or config["eval_batches"]
  return {name: stack_eval_batches(w, e, n) for name, w in windows.items()}


class GPT2Data(NamedTuple):
  tokenizer: Any
  loader: Any  # grain dataset of mixture batches, or of {source: batch} (Nexus)
  val: dict[str, dict[str, np.ndarray]]  # source -> {"inputs", "targets"}: (L, E, T)
  ood: dict[str, dict[str, np.ndarray]]


def gpt2_data(
  config, workdir: Path | None, nexus: bool = False, shard: tuple[int, int] = (0, 1)
) -> GPT2Data:
  """The tokenizer, the training loader (a mixture, or one batch per source
  for Nexus) and the fixed validation and OOD batches of a GPT-2 config. The
  loader yields this process's rows of every global batch (``shard``:
  training.host_data.process_block), laid out for grad_accum_steps microbatches."""
  try:  # The tokenizers word their errors (offline tiktoken, no tiktoken, a BPE
    tok = gpt2_tokenizer(config, workdir)  # the corpus cannot fill): one line.
  except (ValueError, OSError, ImportError, RuntimeError) as e:
    raise UserError(one_line(e)) from None
  try:  # The data layers word theirs (an empty file, a bad shard header).
    train = gpt2_windows(config, "train", tok)
  except (ValueError, OSError) as e:
    raise UserError(one_line(e)) from None
  weights = [float(w) for w in plus_list(config.data.weights)] or None
  rows = {"microbatches": config.grad_accum_steps, "shard": shard}
  if nexus:  # batch_size / K sequences of every source
    loader = text_pipeline.per_source_loader(
      train, config.batch_size // len(train), config.seed, **rows
    )
  else:
    loader = text_pipeline.mixture_loader(train, weights, config.batch_size, config.seed, **rows)
  val = eval_batches(config, "validation", tok)
  ood_list = ood_names(config)
  ood = eval_batches(config, "test", tok, ood_list) if ood_list else {}
  return GPT2Data(tok, loader, val, ood)


def stacked_loss(model: gpt2.GPT2):
  """(params, {"inputs", "targets": (L, E, T)}) -> the mean loss over the L
  batches (lax.map: one batch's activations in memory at a time)."""

  def loss(params, batches):
    return jax.lax.map(
      lambda xy: gpt2.loss_fn(params, model, *xy), (batches["inputs"], batches["targets"])
    ).mean()

  return loss


def check_buildable(config) -> None:
  """The cheap checks of the data a config reads (paths, headers), before
  anything is written: one line naming the file and the fix."""
  if config.model.name != "gpt2":
    return
  try:
    corpus.check_source(
      data_source(config), plus_list(config.data.sources), config.data.get("data_dir") or None
    )
  except (ValueError, FileNotFoundError, OSError) as e:
    raise UserError(one_line(e)) from None


def as_config(config) -> ml_collections.ConfigDict:
  return (
    config if isinstance(config, ml_collections.ConfigDict) else ml_collections.ConfigDict(config)
  )
