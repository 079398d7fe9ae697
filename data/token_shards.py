"""Readers (and a writer) for pre-tokenized uint16 shards, memory-mapped.

Two on-disk formats, told apart by the first four bytes:

- nanoGPT (`data/*/prepare.py`): a bare array of np.uint16 tokens, written with
  np.memmap (train.bin, val.bin).
- llm.c / modded-nanogpt (`fineweb_train_000001.bin`): a 256 x int32 header
  (header[0] = magic 20240520, header[1] = version 1, header[2] = token count),
  then that many uint16 tokens.

    windows = shard_windows("data/fineweb10B/fineweb_train_*.bin", seq_len=1024)
    # a TokenWindows: feeds data/text_pipeline's mixture_loader / per_source_loader
"""

import glob
import os

import numpy as np

from data.text_pipeline import TokenWindows

LLMC_MAGIC = 20240520
LLMC_VERSION = 1
LLMC_HEADER_INT32 = 256
_HEADER_BYTES = LLMC_HEADER_INT32 * 4


def read_shard(path: str) -> np.ndarray:
  """The tokens of one shard as a read-only uint16 memmap (either format)."""
  if os.path.isdir(path):
    raise ValueError(
      f"Token shard {path!r} is a directory; point the pattern at the .bin files in it."
    )
  if not os.path.isfile(path):
    raise FileNotFoundError(f"Token shard {path!r} does not exist.")
  size = os.path.getsize(path)
  if size == 0:
    raise ValueError(f"Token shard {path!r} is empty (0 bytes); re-run the script that wrote it.")
  first = np.fromfile(path, dtype="<i4", count=1) if size >= 4 else np.zeros(1, np.int32)
  # A bare shard starting with the magic would need token 55000 (0xD6C8) first:
  # above GPT-2's 50257 ids, so the two formats cannot be confused for it.
  if first[0] == LLMC_MAGIC:
    return _read_llmc(path, size)
  if size % 2:
    raise ValueError(
      f"Token shard {path!r} has an odd size ({size} bytes), so it is neither "
      f"raw uint16 tokens (nanoGPT) nor an llm.c shard (magic {LLMC_MAGIC}); "
      "it is truncated or not a token file."
    )
  return np.memmap(path, dtype=np.uint16, mode="r")


def _read_llmc(path: str, size: int) -> np.ndarray:
  if size < _HEADER_BYTES:
    raise ValueError(
      f"Token shard {path!r} starts with the llm.c magic but is shorter "
      f"({size} bytes) than its {_HEADER_BYTES}-byte header."
    )
  header = np.fromfile(path, dtype="<i4", count=LLMC_HEADER_INT32)
  if header[1] != LLMC_VERSION:
    raise ValueError(
      f"Token shard {path!r}: llm.c header version {header[1]}, this reader "
      f"knows version {LLMC_VERSION} (uint16 tokens)."
    )
  count = int(header[2])
  expected = _HEADER_BYTES + 2 * count
  if size != expected:
    raise ValueError(
      f"Token shard {path!r}: the header promises {count} tokens "
      f"({expected} bytes in all) but the file has {size} bytes; it is "
      "truncated or was written with another token width."
    )
  return np.memmap(path, dtype=np.uint16, mode="r", offset=_HEADER_BYTES, shape=(count,))


def write_shard(path: str, tokens, llmc_header: bool = True) -> None:
  """Writes tokens (< 65536) in the llm.c format, or nanoGPT's bare format."""
  tokens = np.asarray(tokens)
  if tokens.size and (tokens.min() < 0 or tokens.max() >= 2**16):
    raise ValueError(f"uint16 shards hold ids in [0, 65535]; got [{tokens.min()}, {tokens.max()}].")
  with open(path, "wb") as f:
    if llmc_header:
      header = np.zeros(LLMC_HEADER_INT32, "<i4")
      header[:3] = (LLMC_MAGIC, LLMC_VERSION, tokens.size)
      f.write(header.tobytes())
    f.write(tokens.astype("<u2").tobytes())


def shard_paths(pattern: str) -> list[str]:
  """Sorted files matching a glob pattern (or one file); none is an error."""
  paths = sorted(glob.glob(pattern))
  if not paths:
    raise FileNotFoundError(
      f"No token shards match {pattern!r}; check the path, or write "
      "them first (nanoGPT's prepare.py, or llm.c's fineweb.py)."
    )
  return paths


def shard_windows(pattern: str, seq_len: int, vocab_size: int | None = None) -> TokenWindows:
  """Windows of seq_len + 1 tokens over all shards matching pattern.

  With vocab_size, the first million ids of each shard are checked against it
  (an out-of-range id would index past the embedding silently on accelerators;
  reading whole shards would cost minutes on FineWeb-sized data).
  """
  paths = shard_paths(pattern)
  arrays = [read_shard(p) for p in paths]
  for path, tokens in zip(paths, arrays):
    head = tokens[:1_000_000]
    if vocab_size is not None and head.size and int(head.max()) >= vocab_size:
      raise ValueError(
        f"{path}: token id {int(head.max())} >= the model's vocab_size "
        f"{vocab_size}; the shards were written with another tokenizer."
      )
  return TokenWindows(arrays, seq_len, name=pattern)
