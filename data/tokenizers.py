"""Tokenizers behind one interface, all usable offline.

    tok = get_tokenizer("bytes")                       # vocab 256, EOT = byte 0
    tok = get_tokenizer("bpe", workdir=DIR, vocab_size=4096)  # trained once, then cached
    tok = get_tokenizer("gpt2")                        # tiktoken's GPT-2 (cached files needed)
    ids = tok.encode("text")   # np.ndarray[int32]
    tok.decode(ids), tok.vocab_size, tok.eot_id, tok.name

Every tokenizer has an end-of-text id (`eot_id`) that the packer puts between
documents. The byte tokenizer uses the NUL byte for it, so its vocabulary is
exactly 256 (the `tiny`/`small` GPT-2 configs); text containing NUL is refused.
The BPE is byte-level (GPT-2's scheme: every string encodes, no unknown token),
trained with the `tokenizers` library on the training splits of the text
sources, and saved in the workdir so the next call loads it.
"""

import hashlib
import os
from collections.abc import Sequence

import numpy as np
from absl import logging

EOT_TEXT = "<|endoftext|>"
TOKENIZERS = ("bytes", "bpe", "gpt2")


class ByteTokenizer:
  """UTF-8 bytes; vocab 256; end-of-text is byte 0 (NUL)."""

  name = "bytes"
  vocab_size = 256
  eot_id = 0

  def encode(self, text: str) -> np.ndarray:
    ids = np.frombuffer(text.encode("utf-8"), np.uint8).astype(np.int32)
    if ids.size and not ids.all():
      raise ValueError(
        "Text holds a NUL character, which the byte tokenizer reserves for "
        "end-of-text; strip NULs from the text or use the 'bpe' tokenizer."
      )
    return ids

  def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
    return [self.encode(t) for t in texts]

  def decode(self, ids) -> str:
    ids = np.asarray(ids)
    if ids.size and (ids.min() < 0 or ids.max() > 255):
      raise ValueError(f"Byte token ids must be in [0, 255]; got [{ids.min()}, {ids.max()}].")
    # Malformed UTF-8 (a sequence cut mid-character) decodes to U+FFFD.
    return ids.astype(np.uint8).tobytes().decode("utf-8", errors="replace")


class HFTokenizer:
  """A `tokenizers.Tokenizer` (e.g. our byte-level BPE) with the common interface."""

  def __init__(self, tokenizer, name: str):
    self._tok = tokenizer
    # A literal "<|endoftext|>" in a document is text, not a document boundary
    # (tiktoken's encode_ordinary): only the packer inserts eot_id.
    tokenizer.encode_special_tokens = True
    self.name = name
    self.vocab_size = tokenizer.get_vocab_size()
    eot = tokenizer.token_to_id(EOT_TEXT)
    if eot is None:
      raise ValueError(
        f"Tokenizer {name} has no {EOT_TEXT!r} token; train it with special_tokens=[{EOT_TEXT!r}]."
      )
    self.eot_id = eot

  @classmethod
  def from_file(cls, path: str) -> "HFTokenizer":
    """A tokenizer.json written by `tokenizers` (ours, or Hugging Face's gpt2)."""
    from tokenizers import Tokenizer  # pylint: disable=g-import-not-at-top

    if not os.path.isfile(path):
      raise FileNotFoundError(f"No tokenizer file {path!r}.")
    return cls(Tokenizer.from_file(path), name=os.path.basename(path))

  def encode(self, text: str) -> np.ndarray:
    return np.asarray(self._tok.encode(text, add_special_tokens=False).ids, np.int32)

  def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
    encodings = self._tok.encode_batch(list(texts), add_special_tokens=False)  # multithreaded
    return [np.asarray(e.ids, np.int32) for e in encodings]

  def decode(self, ids) -> str:
    return self._tok.decode([int(i) for i in np.asarray(ids).ravel()], skip_special_tokens=False)


class TiktokenTokenizer:
  """tiktoken's `gpt2` encoding (vocab 50257, EOT 50256), if its files are cached."""

  def __init__(self, encoding_name: str = "gpt2"):
    try:
      import tiktoken  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise ImportError(
        "The 'gpt2' tokenizer needs tiktoken: pip install 'tiktoken>=0.7'; "
        "or use the 'bytes' or 'bpe' tokenizer."
      ) from e
    try:
      self._enc = tiktoken.get_encoding(encoding_name)
    except Exception as e:  # requests' ConnectionError, OSError, blobfile errors, ...
      raise RuntimeError(_tiktoken_offline_message(encoding_name, e)) from e
    self.name = f"tiktoken:{encoding_name}"
    self.vocab_size = self._enc.n_vocab
    self.eot_id = self._enc.eot_token

  def encode(self, text: str) -> np.ndarray:
    return np.asarray(self._enc.encode_ordinary(text), np.int32)

  def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
    return [np.asarray(ids, np.int32) for ids in self._enc.encode_ordinary_batch(list(texts))]

  def decode(self, ids) -> str:
    return self._enc.decode([int(i) for i in np.asarray(ids).ravel()])


_GPT2_URLS = (
  "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe",
  "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json",
)


def _tiktoken_offline_message(encoding_name: str, error: Exception) -> str:
  cache = os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR")
  files = ", ".join(
    f"{hashlib.sha1(u.encode()).hexdigest()} (= {u.rsplit('/', 1)[1]})" for u in _GPT2_URLS
  )
  return (
    f"tiktoken could not load its {encoding_name!r} encoding ({type(error).__name__}: "
    f"{str(error)[:200]}). tiktoken downloads the BPE files on first use, and this "
    "machine is offline or cannot reach openaipublic.blob.core.windows.net. Fix: on a "
    "machine with internet run `python -c \"import tiktoken; tiktoken.get_encoding('gpt2')\"` "
    "with TIKTOKEN_CACHE_DIR=DIR, copy DIR here and set TIKTOKEN_CACHE_DIR=DIR "
    f"(currently {cache!r}; for gpt2 it must hold the files {files}); or use the "
    "'bytes' or 'bpe' tokenizer, which need no download."
  )


def train_bpe(texts, vocab_size: int):
  """A byte-level BPE (GPT-2's pre-tokenization) trained on an iterable of str."""
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # pylint: disable=g-import-not-at-top

  if vocab_size < 257 + 1:
    raise ValueError(
      f"A byte-level BPE needs vocab_size > 257 (256 bytes + {EOT_TEXT}), got {vocab_size}."
    )
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(
    vocab_size=vocab_size,
    special_tokens=[EOT_TEXT],
    initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    show_progress=False,
  )
  tok.train_from_iterator(texts, trainer)
  return tok


def bpe_tokenizer(
  workdir: str,
  vocab_size: int = 8192,
  texts: Sequence[str] | None = None,
  sources: Sequence[str] = ("prose", "code", "math"),
) -> HFTokenizer:
  """Loads workdir's cached BPE, or trains it (on `texts`, else on the training
  splits of `sources`) and caches it there. The file name encodes what it was
  trained on, so a different corpus or size trains a new one."""
  if texts is not None:
    digest = hashlib.sha1()
    for t in texts:
      digest.update(t.encode("utf-8", errors="replace"))
    corpus_id = "texts-" + digest.hexdigest()[:12]
  else:
    corpus_id = "-".join(sources)
  path = os.path.join(workdir, f"bpe_{corpus_id}_{vocab_size}.json")
  if os.path.isfile(path):
    logging.info("Loading the cached BPE tokenizer %s", path)
    return HFTokenizer.from_file(path)
  if texts is None:
    from data.text_sources import load_source  # pylint: disable=g-import-not-at-top

    texts = [d for s in sources for d in load_source(s, "train").documents]
  if not any(texts):
    raise ValueError("Cannot train a BPE tokenizer on no text: pass non-empty texts.")
  logging.info("Training a %d-token byte-level BPE on %d documents", vocab_size, len(texts))
  tok = train_bpe(texts, vocab_size)
  if tok.get_vocab_size() < vocab_size:  # BPE ran out of merges: a smaller vocabulary.
    raise ValueError(
      f"The corpus ({len(texts)} documents) only yields a {tok.get_vocab_size()}-token BPE, "
      f"not {vocab_size}: lower data.bpe_vocab_size or give it more text."
    )
  os.makedirs(workdir, exist_ok=True)
  tmp = path + ".tmp"  # write-then-rename: a crashed run leaves no half file to load
  tok.save(tmp)
  os.replace(tmp, path)
  return HFTokenizer(tok, name=os.path.basename(path))


def get_tokenizer(
  name: str, workdir: str | None = None, vocab_size: int = 8192, texts: Sequence[str] | None = None
):
  """'bytes', 'bpe' (needs workdir), 'gpt2' (tiktoken), or a path to a tokenizer.json."""
  if name == "bytes":
    return ByteTokenizer()
  if name == "bpe":
    if workdir is None:
      raise ValueError("The 'bpe' tokenizer is cached in a directory: pass workdir.")
    return bpe_tokenizer(workdir, vocab_size, texts)
  if name in ("gpt2", "tiktoken:gpt2"):
    return TiktokenTokenizer("gpt2")
  if name.endswith(".json"):
    return HFTokenizer.from_file(name)
  raise ValueError(f"Unknown tokenizer {name!r}; known: {TOKENIZERS} or a tokenizer.json path.")
