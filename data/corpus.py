"""One config string, `data.source`, picks the corpus a GPT-2 run reads.

    builtin              data/text_sources.py (no download): the names in data.sources
                         ("prose+code+math"), splits train/validation, OOD names "test".
    shards:PATTERN       pre-tokenized uint16 .bin files, nanoGPT or llm.c
                         (data/token_shards.py); {split} becomes "train" or "val":
                         shards:data/owt/{split}.bin, shards:fineweb10B/fineweb_{split}_*.bin
    tfds:NAME[:SPLIT[,VALIDATION]]
                         a prepared tfds text dataset in data.data_dir (data/tfds_text.py).
    text:GLOB[+GLOB...]  the user's own UTF-8 files; each glob is one source.

    check_source("text:notes/*.md", sources=[])           # before anything is written
    windows = load_windows("text:notes/*.md", "train", tokenizer, 128, sources=[])
    # {"notes": TokenWindows}: for text_pipeline's mixture_loader, per_source_loader
    # and eval_batches

Why one module: the trainer, its config checks and the analyses must agree on
what a spec means (names, splits, vocabulary), and every kind returns the same
thing, {name: TokenWindows} (random access: shuffled loaders and ordered
evaluation passes both need it).

Splits:
- builtin: exactly text_pipeline.build_text_windows (bitwise the same arrays).
- shards: "train" reads PATTERN with {split}=train, "validation" with {split}=val.
  uint16 shards are GPT-2 BPE ids by convention, so the implied vocabulary is
  GPT-2's 50257 (implied_vocab_size), and ids are checked against the model's.
- tfds: training split SPLIT (default "train"); validation split VALIDATION,
  else the dataset's "validation" split if its dataset_info has one, else "test".
  The first documents (in the dataset's order) are tokenized up to max_chars
  characters, or TFDS_DEFAULT_CHARS when max_chars is 0 (c4 is far too large
  to tokenize whole; the last document is cut to fit).
- text: each file is a document; a hash of its path relative to the glob's
  literal directory puts TEXT_VALIDATION_FRACTION of them in validation (at
  least one file on each side when there are two or more), so the split is the
  same on every machine. A glob matching one file splits its text instead: the
  first 90% (up to the next line break) trains, the rest validates. max_chars
  keeps that many characters per source and split (the last document cut).
Only builtin has OOD sources (split "test").

Errors are one line naming the path and the fix (ValueError, FileNotFoundError).
"""

import os
import re
from typing import NamedTuple

from absl import logging

from data import text_files, text_sources, tfds_text, token_shards
from data.text_pipeline import TokenWindows, build_text_windows, pack_documents

KINDS = ("builtin", "shards", "tfds", "text")
USAGE = "builtin, shards:PATTERN, tfds:NAME[:SPLIT] or text:GLOB[+GLOB...]"
GPT2_VOCAB_SIZE = 50257
SHARD_SPLITS = {"train": "train", "validation": "val"}
SHARD_SOURCE = "shards"
TEXT_VALIDATION_FRACTION = text_files.VALIDATION_FRACTION
TFDS_DEFAULT_CHARS = {"train": 200_000_000, "validation": 10_000_000}
TFDS_BPE_CHARS = 20_000_000  # what a BPE tokenizer trains on, when max_chars is 0
_TFDS_RE = re.compile(
  r"(?P<name>[\w.-]+(?:/[\w.-]+)?(?::[\d*]+\.[\d*]+\.[\d*]+)?)"  # c4/en:3.0.1
  r"(?::(?P<split>[^,]+)(?:,(?P<validation>.+))?)?"
)


class Source(NamedTuple):
  """A parsed data.source: kind (one of KINDS), its argument, kind-specific options."""

  kind: str
  argument: str
  options: dict


# ---------------------------------------------------------------- parsing


def parse_source(spec: str) -> Source:
  """The Source of a spec; ValueError (one line) on bad syntax or an unknown kind."""
  spec = (spec or "builtin").strip()
  kind, sep, argument = spec.partition(":")
  argument = argument.strip()
  if kind not in KINDS:
    raise ValueError(f"Unknown data.source {spec!r}: use {USAGE}.")
  if kind == "builtin":
    if sep:
      raise ValueError(
        f"data.source {spec!r}: builtin takes no argument (data.sources names its sources); "
        "write 'builtin'."
      )
    return Source("builtin", "", {})
  if not argument:
    raise ValueError(f"data.source {spec!r} has nothing after '{kind}:'; use {USAGE}.")
  return {"shards": _parse_shards, "tfds": _parse_tfds, "text": _parse_text}[kind](argument, spec)


def _parse_shards(pattern: str, spec: str) -> Source:
  if "{split}" not in pattern:
    raise ValueError(
      f"data.source {spec!r}: put {{split}} in the shard pattern where the split goes (it "
      "becomes 'train' and 'val'), e.g. shards:data/owt/{split}.bin or "
      "shards:fineweb10B/fineweb_{split}_*.bin."
    )
  return Source("shards", pattern, {})


def _parse_tfds(argument: str, spec: str) -> Source:
  match = _TFDS_RE.fullmatch(argument)
  if not match:
    raise ValueError(
      f"data.source {spec!r}: expected tfds:NAME[:SPLIT[,VALIDATION]], e.g. tfds:lm1b or "
      "tfds:c4/en:train,validation."
    )
  options = {"split": match["split"] or "train", "validation": match["validation"]}
  return Source("tfds", match["name"], options)


def _parse_text(argument: str, spec: str) -> Source:
  globs = tuple(g.strip() for g in argument.split("+"))
  if not all(globs):
    raise ValueError(f"data.source {spec!r} has an empty glob; write text:GLOB[+GLOB...].")
  return Source(
    "text",
    argument,
    {"globs": globs, "names": tuple(_unique([text_files.glob_name(g) for g in globs]))},
  )


# ---------------------------------------------------------------- the API


def source_names(spec: str, sources: list[str]) -> list[str]:
  """The training sources' names: `sources` for builtin, derived otherwise."""
  source = parse_source(spec)
  if source.kind == "builtin":
    return list(sources)
  if source.kind == "shards":
    return [SHARD_SOURCE]
  if source.kind == "tfds":
    return [_tfds_source_name(source.argument)]
  return list(source.options["names"])


def implied_vocab_size(spec: str) -> int | None:
  """GPT-2's 50257 for shards (uint16 shards hold GPT-2 BPE ids by convention);
  None otherwise (the run's tokenizer decides)."""
  return GPT2_VOCAB_SIZE if parse_source(spec).kind == "shards" else None


def check_source(spec: str, sources: list[str], data_dir: str | None = None) -> None:
  """Cheap checks of what a spec reads (paths, globs, headers), before a run
  writes or trains anything: one-line ValueError/FileNotFoundError naming the fix."""
  source = parse_source(spec)
  if source.kind == "builtin":
    _check_builtin(sources)
  elif source.kind == "shards":
    for split in SHARD_SPLITS:
      for path in token_shards.shard_paths(_shard_pattern(source, split)):
        token_shards.read_shard(path)  # header and size; memory-mapped, not read
  elif source.kind == "tfds":
    for split in ("train", "validation"):
      docs = _tfds_docs(source, split, data_dir)
      _ = docs[0]  # the text field exists and decodes
  else:
    for pattern in source.options["globs"]:
      for path in text_files.glob_files(pattern):
        text_files.check_text_file(path)


def load_windows(
  spec: str,
  split: str,
  tokenizer,
  seq_len: int,
  *,
  sources: list[str],
  max_chars: int = 0,
  data_dir: str | None = None,
  vocab_size: int | None = None,
) -> dict[str, TokenWindows]:
  """{name: TokenWindows} of split ("train", "validation"; "test" for builtin's
  OOD names passed as `sources`). vocab_size bounds the ids of shards
  (default GPT-2's); max_chars = 0 means all (tfds: TFDS_DEFAULT_CHARS)."""
  source = parse_source(spec)
  _check_split(source, split, spec)
  if source.kind == "builtin":
    kwargs = {"max_chars": max_chars} if max_chars else {}
    return build_text_windows(sources, split, tokenizer, seq_len, **kwargs)
  if source.kind == "shards":
    pattern = _shard_pattern(source, split)
    windows = token_shards.shard_windows(pattern, seq_len, vocab_size or GPT2_VOCAB_SIZE)
    windows.name = f"{SHARD_SOURCE}/{split}"
    _log(windows, "uint16 shards")
    return {SHARD_SOURCE: windows}
  documents = _documents(source, split, max_chars, data_dir)
  return {
    name: _pack(docs, tokenizer, seq_len, f"{name}/{split}") for name, docs in documents.items()
  }


def training_texts(
  spec: str, sources: list[str], max_chars: int = 0, data_dir: str | None = None
) -> list[str]:
  """The training documents a BPE tokenizer is trained on (tfds: the first
  max_chars or TFDS_BPE_CHARS characters); shards are already tokenized."""
  source = parse_source(spec)
  if source.kind == "builtin":
    kwargs = {"max_chars": max_chars} if max_chars else {}
    return [t for s in sources for t in text_sources.load_source(s, "train", **kwargs).documents]
  if source.kind == "shards":
    raise ValueError(
      f"data.source {spec!r} is pre-tokenized (GPT-2 BPE ids): there is no text to train a "
      "tokenizer on; its vocabulary is implied (50257)."
    )
  if source.kind == "tfds":
    return _tfds_texts(_tfds_docs(source, "train", data_dir), max_chars or TFDS_BPE_CHARS)
  return [t for docs in _documents(source, "train", max_chars, None).values() for t in docs]


# ---------------------------------------------------------------- shared helpers


def _check_builtin(sources: list[str]) -> None:
  unknown = [s for s in sources if s not in text_sources.SOURCES]
  if not sources or unknown:
    raise ValueError(
      f"data.sources {'+'.join(sources)!r}: the builtin corpus has the sources "
      f"{'+'.join(text_sources.SOURCES)}; pick from them."
    )


def _check_split(source: Source, split: str, spec: str) -> None:
  allowed = ("train", "validation", "test") if source.kind == "builtin" else tuple(SHARD_SPLITS)
  if split not in allowed:
    raise ValueError(
      f"data.source {spec!r} has the splits {allowed}, not {split!r}"
      + ("; only builtin has OOD sources (split 'test')." if split == "test" else ".")
    )


def _documents(source: Source, split: str, max_chars: int, data_dir: str | None) -> dict:
  """{name: documents} of a tfds or text source."""
  if source.kind == "tfds":
    docs = _tfds_docs(source, split, data_dir)
    name = _tfds_source_name(source.argument)
    return {name: _tfds_texts(docs, max_chars or TFDS_DEFAULT_CHARS[split])}
  names, globs = source.options["names"], source.options["globs"]
  return {
    n: _truncate(text_files.text_documents(g, split), max_chars) for n, g in zip(names, globs)
  }


def _pack(documents: list[str], tokenizer, seq_len: int, name: str) -> TokenWindows:
  windows = pack_documents(documents, tokenizer, seq_len, name)
  _log(windows, f"{len(documents)} documents, {sum(map(len, documents)):,} characters")
  return windows


def _log(windows: TokenWindows, what: str) -> None:
  logging.info(
    "%s: %d tokens (%s), %d windows of %d",
    windows.name,
    windows.num_tokens,
    what,
    len(windows),
    windows.seq_len,
  )


def _truncate(texts: list[str], max_chars: int) -> list[str]:
  """The first max_chars characters (0: all), the last document cut to fit."""
  if not max_chars:
    return texts
  kept, total = [], 0
  for text in texts:
    if total >= max_chars:
      break
    kept.append(text[: max_chars - total])
    total += len(kept[-1])
  return kept


def _unique(names: list[str]) -> list[str]:
  out = []
  for name in names:
    candidate, k = name, 1
    while candidate in out:
      k += 1
      candidate = f"{name}_{k}"
    out.append(candidate)
  return out


# ---------------------------------------------------------------- shards


def _shard_pattern(source: Source, split: str) -> str:
  return os.path.expanduser(source.argument.replace("{split}", SHARD_SPLITS[split]))


# ---------------------------------------------------------------- tfds


def _tfds_source_name(name: str) -> str:
  return name.split(":")[0].replace("/", "_")  # c4/en:3.0.1 -> c4_en


def _tfds_split(source: Source, split: str, data_dir: str | None) -> str:
  if split == "train":
    return source.options["split"]
  if source.options["validation"]:
    return source.options["validation"]
  names = tfds_text.tfds_split_names(source.argument, data_dir)
  if not names or "validation" in names:  # unknown (not prepared, mock data): try it
    return "validation"
  if "test" in names:
    return "test"
  raise ValueError(
    f"tfds {source.argument} has no 'validation' or 'test' split (it has {names}); name "
    f"one: data.source='tfds:{source.argument}:{source.options['split']},SPLIT'."
  )


def _tfds_docs(source: Source, split: str, data_dir: str | None) -> tfds_text.TfdsDocuments:
  return tfds_text.tfds_documents(
    source.argument, _tfds_split(source, split, data_dir), data_dir=data_dir
  )


def _tfds_texts(docs: tfds_text.TfdsDocuments, max_chars: int) -> list[str]:
  """The first documents in the dataset's order, up to max_chars characters."""
  texts, total = [], 0
  for index in range(len(docs)):
    if total >= max_chars:
      break
    texts.append(docs[index][: max_chars - total])
    total += len(texts[-1])
  logging.info(
    "tfds %s/%s: the first %d of %d documents (%d characters)",
    docs.name,
    docs.split,
    len(texts),
    len(docs),
    total,
  )
  return texts
