"""Reading a GPT-2 train.py run back for analysis: its model, the text
batches of its sources, and the loss on a stack of batches."""

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from analysis import workdir as wd
from data import text_pipeline, tokenizers
from models import gpt2


def plus_list(text: str) -> list[str]:
  """"a+b+c" -> ["a", "b", "c"] (the configs' list syntax)."""
  return [x for x in text.split("+") if x]


def model_for(run_dir: Path) -> tuple[gpt2.GPT2, dict]:
  """(the run's model, dropout off, its config as a dict)."""
  config = wd.load_config(run_dir)
  vocab = wd.read_summary(run_dir)["vocab_size"]
  m = config.model
  model_config = dataclasses.replace(gpt2.CONFIGS[m.size], vocab_size=vocab,
                                     dtype=jnp.dtype(m.dtype), dropout=0.0)
  return gpt2.GPT2(model_config), config.to_dict()


def text_batches(train_config: dict, split: str, batch_size: int, num_batches: int,
                 sources: list[str] | None = None) -> dict[str, dict[str, np.ndarray]]:
  """{source: {"inputs", "targets": (N, batch_size, seq_len)}}: the first N
  batches of the split's windows in order (the same every call), N ≤
  num_batches (a small source may have fewer), for the run's sources (or
  ``sources``: e.g. the OOD ones with split="test")."""
  d = train_config["data"]
  if d["tokenizer"] != "bytes":
    raise ValueError("The GPT-2 analyses evaluate byte-tokenized runs only; "
                     f"got data.tokenizer={d['tokenizer']!r}.")
  tok = tokenizers.get_tokenizer("bytes")
  kwargs = {"max_chars": d["max_chars"]} if d["max_chars"] else {}
  windows = text_pipeline.build_text_windows(sources or plus_list(d["sources"]), split, tok,
                                             d["seq_len"], **kwargs)
  out = {}
  for name, w in windows.items():
    batches = list(text_pipeline.eval_batches(w, batch_size, num_batches))
    out[name] = {k: np.stack([b[k] for b in batches]) for k in ("inputs", "targets")}
  return out


def stacked_loss(model: gpt2.GPT2):
  """(params, {"inputs", "targets": (N, E, T)}) -> the mean loss over the N
  batches (lax.map: one batch's activations in memory at a time)."""
  def loss(params, batches):
    return jax.lax.map(lambda xy: gpt2.loss_fn(params, model, *xy),
                       (batches["inputs"], batches["targets"])).mean()
  return loss
