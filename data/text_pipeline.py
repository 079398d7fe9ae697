"""Packed next-token batches from several text sources, through grain.

A source's documents are tokenized and concatenated, each followed by the
end-of-text id (GPT-2's layout: doc EOT doc EOT ...), into one token stream.
Window i of a stream is tokens[i·T : i·T + T + 1]; inputs are its first T
tokens and targets its last T (shifted by one), so windows do not overlap and
every token but the first is a target exactly once per epoch.

    windows = build_text_windows(["prose", "code", "math"], "train", tokenizer, seq_len=128)
    it = iter(mixture_loader(windows, weights=[0.5, 0.3, 0.2], batch_size=16, seed=0))
    batch = next(it)   # {"inputs": (16, 128) int32, "targets": ..., "source_id": (16,) int32}
    state = it.get_state(); ...; it.set_state(state)   # resumes at exactly the next batch

    it = iter(per_source_loader(windows, batch_size=8, seed=0))
    batch = next(it)   # {"prose": {"inputs": (8, 128), ...}, "code": {...}, "math": {...}}

Each source is an infinite, per-epoch reshuffled grain.MapDataset; the mixture
takes elements from the sources in fixed proportions (grain's MapDataset.mix:
deterministic interleaving, so every step sees the weights up to rounding), and
a batch is a pure function of its step, which is why the iterator state is
small and restores exactly. Checkpoint it beside the train state (orbax's
grain checkpoint handler, or the JSON of `get_state()`).

Per-host reading: with ``shard=(index, count)`` (training.distributed.process_block) a
process reads only its own rows of every global batch, and ``microbatches=A`` lays them out
for gradient accumulation. The global batch of a step is cut into A microbatches, each into
``count`` blocks of B/(A·count) rows; process ``index`` reads block ``index`` of every
microbatch, so the processes' rows together are exactly the one-process batch, in the same
order (the examples are chunks of the example stream, ``batch(B/(A·count))[index::count]``):
every example is read once, by one process, and a multi-process run sees the same data as a
one-process run of the same global batch.

Sources that are streams rather than arrays (tfds corpora too large to
tokenize up front, data/tfds_text.py) come as grain.IterDatasets of examples;
they mix with IterDataset.mix, whose state restores as well. A stream cannot be
indexed, so it is not split by process (one line says so).
"""

import bisect
from collections.abc import Mapping, Sequence

import grain
import numpy as np
from absl import logging

from data.text_sources import load_source


class TokenWindows:
  """Random access to the length-(T+1) windows of one or more token arrays
  (np.ndarray or np.memmap; a window never crosses from one array into the next).

  A grain RandomAccessDataSource: len() and [i] -> {"inputs", "targets"} (int32).
  """

  def __init__(self, arrays: Sequence[np.ndarray], seq_len: int, name: str = "tokens"):
    if seq_len < 1:
      raise ValueError(f"seq_len must be >= 1, got {seq_len}.")
    self.arrays, self.seq_len, self.name = list(arrays), seq_len, name
    counts = [max(0, (len(a) - 1) // seq_len) for a in self.arrays]
    self._starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    if self._starts[-1] == 0:
      sizes = [len(a) for a in self.arrays]
      raise ValueError(
        f"{name}: no window of seq_len + 1 = {seq_len + 1} tokens fits in token "
        f"arrays of lengths {sizes[:5]}{'...' if len(sizes) > 5 else ''}; use more "
        "text or a shorter seq_len."
      )

  @property
  def num_tokens(self) -> int:
    return sum(len(a) for a in self.arrays)

  def __len__(self) -> int:
    return int(self._starts[-1])

  def __getitem__(self, index: int) -> dict:
    index = int(index)
    if not 0 <= index < len(self):
      raise IndexError(f"{self.name}: window {index} out of range [0, {len(self)}).")
    k = bisect.bisect_right(self._starts, index) - 1
    start = (index - int(self._starts[k])) * self.seq_len
    w = np.asarray(self.arrays[k][start : start + self.seq_len + 1], np.int32)
    return {"inputs": w[:-1], "targets": w[1:]}

  def __repr__(self) -> str:
    return f"TokenWindows({self.name}: {len(self)} windows of {self.seq_len})"


def pack_documents(
  documents: Sequence[str], tokenizer, seq_len: int, name: str = "documents"
) -> TokenWindows:
  """Tokenizes, joins with EOT after each document, and windows the stream."""
  if not documents:
    raise ValueError(f"{name}: no documents to pack.")
  ids = tokenizer.encode_batch(list(documents))
  eot = np.asarray([tokenizer.eot_id], np.int32)
  stream = np.concatenate([part for doc in ids for part in (doc, eot)])
  # uint16 halves the memory when the vocabulary allows (as nanoGPT's .bin files).
  stream = stream.astype(np.uint16 if tokenizer.vocab_size <= 2**16 else np.int32)
  return TokenWindows([stream], seq_len, name)


def build_text_windows(
  names: Sequence[str], split: str, tokenizer, seq_len: int, **source_kwargs
) -> dict[str, TokenWindows]:
  """{name: TokenWindows} for sources of data/text_sources.py; logs the sizes."""
  windows = {}
  for name in names:
    source = load_source(name, split, **source_kwargs)
    windows[name] = pack_documents(source.documents, tokenizer, seq_len, f"{name}/{split}")
    logging.info(
      "%s/%s: %d tokens (%s), %d windows of %d",
      name,
      split,
      windows[name].num_tokens,
      tokenizer.name,
      len(windows[name]),
      seq_len,
    )
  return windows


def _read_options() -> grain.ReadOptions:
  # A few threads are enough: building a batch is slicing and stacking.
  return grain.ReadOptions(num_threads=2, prefetch_buffer_size=8)


def _examples(source, source_id: int, seed: int, shuffle: bool):
  """One source as an infinite dataset of examples tagged with source_id."""
  tag = lambda ex: {**ex, "source_id": np.int32(source_id)}
  if isinstance(source, grain.IterDataset):  # a stream (tfds): already infinite
    return source.map(tag)
  ds = grain.MapDataset.source(source)
  if shuffle:
    ds = ds.shuffle(seed=seed)
  return ds.repeat().map(tag)  # repeat() reseeds the shuffle each epoch


def _check(sources: Mapping, weights=None):
  if not sources:
    raise ValueError("No text sources given to the loader.")
  if weights is not None:
    if len(weights) != len(sources):
      raise ValueError(f"{len(weights)} weights for {len(sources)} sources {list(sources)}.")
    if any(w <= 0 for w in weights):
      raise ValueError(f"Mixture weights must be > 0 (drop a source instead), got {weights}.")


def _merge_leading(batch):
  # (A, c, ...) -> (A·c, ...): a process's rows, microbatch after microbatch.
  return {k: np.reshape(v, (-1, *np.shape(v)[2:])) for k, v in batch.items()}


def local_batches(
  examples: grain.MapDataset, batch_size: int, microbatches: int = 1, shard=(0, 1)
) -> grain.MapDataset:
  """The batches of a process from an indexable example dataset (module docstring):
  B/count rows per step, block ``shard[0]`` of each of the A microbatches, microbatch-major
  (reshape to (A, B/(A·count), ...) to get them). (0, 1) and A = 1: ``batch(B)``."""
  index, count = shard
  if microbatches < 1 or count < 1 or not 0 <= index < count:
    raise ValueError(f"microbatches={microbatches}, shard={shard}: need A >= 1, 0 <= i < count.")
  chunk, rest = divmod(batch_size, microbatches * count)
  if rest or chunk == 0:
    raise ValueError(
      f"batch_size={batch_size} does not split into {microbatches} microbatches of "
      f"{count} processes' equal blocks; pick a multiple of {microbatches * count}."
    )
  if microbatches == 1 and count == 1:
    return examples.batch(batch_size, drop_remainder=True)
  chunks = examples.batch(chunk, drop_remainder=True)
  if count > 1:
    chunks = chunks[index::count]  # only this process's chunks are ever read
  return chunks.batch(microbatches, drop_remainder=True).map(_merge_leading)


def _streams_unsharded(parts, shard) -> None:
  if shard[1] > 1 and any(isinstance(p, grain.IterDataset) for p in parts):
    raise ValueError(
      f"A streamed source (tfds) cannot be split over {shard[1]} processes (a stream has no "
      "index); use an indexed corpus (builtin, text files, token shards) for multi-process runs."
    )


def mixture_loader(
  sources: Mapping[str, object],
  weights: Sequence[float] | None,
  batch_size: int,
  seed: int = 0,
  shuffle: bool = True,
  microbatches: int = 1,
  shard: tuple[int, int] = (0, 1),
) -> grain.IterDataset:
  """Batches mixing the sources in proportion to weights (uniform if None);
  source_id is the position of the source in `sources`. ``batch_size`` is the
  global batch; with ``shard`` a process gets its rows (`local_batches`)."""
  _check(sources, weights)
  parts = [_examples(s, i, seed + 1000 * i, shuffle) for i, s in enumerate(sources.values())]
  _streams_unsharded(parts, shard)
  if all(isinstance(p, grain.MapDataset) for p in parts):
    mixed = grain.MapDataset.mix(parts, weights)
    batches = local_batches(mixed, batch_size, microbatches, shard)
    return batches.to_iter_dataset(_read_options())
  parts = [
    p if isinstance(p, grain.IterDataset) else p.to_iter_dataset(_read_options()) for p in parts
  ]
  return grain.IterDataset.mix(parts, weights).batch(batch_size, drop_remainder=True)


def per_source_loader(
  sources: Mapping[str, object],
  batch_size: int,
  seed: int = 0,
  shuffle: bool = True,
  microbatches: int = 1,
  shard: tuple[int, int] = (0, 1),
) -> grain.IterDataset:
  """Every step, one batch of every source: {name: batch} (for Nexus-style
  optimizers that need a gradient per source per step). ``batch_size`` is each
  source's global batch; with ``shard`` a process gets its rows of each."""
  _check(sources)
  names = list(sources)
  examples = [_examples(s, i, seed + 1000 * i, shuffle) for i, s in enumerate(sources.values())]
  _streams_unsharded(examples, shard)
  parts = [
    local_batches(e, batch_size, microbatches, shard)
    if isinstance(e, grain.MapDataset)
    else e.batch(batch_size, drop_remainder=True)
    for e in examples
  ]
  as_dict = lambda batches: dict(zip(names, batches))
  if all(isinstance(p, grain.MapDataset) for p in parts):
    zipped = grain.experimental.ZipMapDataset(parts)
    return zipped.map(as_dict).to_iter_dataset(_read_options())
  parts = [
    p if isinstance(p, grain.IterDataset) else p.to_iter_dataset(_read_options()) for p in parts
  ]
  return grain.experimental.ZipIterDataset(parts).map(as_dict)


def eval_batches(windows: TokenWindows, batch_size: int, max_batches: int | None = None):
  """One ordered pass over the windows (no shuffle, no repeat; last partial
  batch dropped) for validation loss: the same windows every evaluation."""
  n = len(windows) // batch_size
  if n == 0:
    raise ValueError(
      f"{windows.name}: {len(windows)} windows make no batch of {batch_size}; "
      "lower the eval batch size."
    )
  ds = grain.MapDataset.source(windows).batch(batch_size, drop_remainder=True)
  return ds[: n if max_batches is None else min(n, max_batches)]
