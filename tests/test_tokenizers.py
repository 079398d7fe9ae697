"""data.tokenizers: bytes, the cached byte-level BPE, and tiktoken's offline error."""

import os

import numpy as np
import pytest

from data import tokenizers as tk
from data.text_sources import load_source

SAMPLES = [
  "def f(x):\n    return x ** 2  # héllo 世界 🙂\n",
  "",
  "  leading spaces\t\ttabs\r\n",
  "Answer: 42\n<|endoftext|> literal",
]


def test_bytes_tokenizer_known_ids_and_round_trip():
  tok = tk.get_tokenizer("bytes")
  assert (tok.vocab_size, tok.eot_id) == (256, 0)
  np.testing.assert_array_equal(tok.encode("hé!"), [104, 0xC3, 0xA9, 33])
  assert tok.encode("hé!").dtype == np.int32
  for s in SAMPLES:
    assert tok.decode(tok.encode(s)) == s
  assert tok.decode([104, 0xC3]) == "h\ufffd"  # a cut character decodes to U+FFFD
  with pytest.raises(ValueError, match="NUL"):
    tok.encode("a\x00b")
  with pytest.raises(ValueError, match=r"\[0, 255\]"):
    tok.decode([300])


@pytest.fixture(scope="module")
def bpe_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("bpe"))


def _training_texts():
  return list(load_source("math", "train", math_problems=2000).documents) + list(
    load_source("prose", "train", max_chars=100_000).documents
  )


def test_bpe_trains_round_trips_and_compresses(bpe_dir):
  texts = _training_texts()
  tok = tk.get_tokenizer("bpe", workdir=bpe_dir, vocab_size=600, texts=texts)
  assert tok.vocab_size == 600 and tok.eot_id == 0
  for s in SAMPLES + ["unseen wörds ∑ and code {x: [1, 2]}"]:
    ids = tok.encode(s)
    assert ids.dtype == np.int32 and (ids < 600).all() and (ids >= 0).all()
    assert tok.decode(ids) == s
  # The literal text "<|endoftext|>" is not the EOT token.
  assert tok.eot_id not in tok.encode(SAMPLES[3])
  batch = tok.encode_batch(SAMPLES)
  assert all((a == tok.encode(s)).all() for a, s in zip(batch, SAMPLES))
  math_text = "".join(texts[:200])
  ratio = len(tok.encode(math_text)) / len(math_text.encode())
  assert ratio < 0.6, ratio  # merges learned on math shorten math


def test_bpe_second_call_loads_the_cache(bpe_dir, monkeypatch):
  texts = _training_texts()
  first = tk.get_tokenizer("bpe", workdir=bpe_dir, vocab_size=600, texts=texts)
  assert len([f for f in os.listdir(bpe_dir) if f.endswith(".json")]) == 1
  monkeypatch.setattr(tk, "train_bpe", lambda *a: pytest.fail("retrained instead of loading"))
  second = tk.get_tokenizer("bpe", workdir=bpe_dir, vocab_size=600, texts=texts)
  np.testing.assert_array_equal(second.encode(SAMPLES[0]), first.encode(SAMPLES[0]))


def test_bpe_errors():
  with pytest.raises(ValueError, match="workdir"):
    tk.get_tokenizer("bpe")
  with pytest.raises(ValueError, match="vocab_size > 257"):
    tk.train_bpe(["abc"], 100)
  with pytest.raises(ValueError, match="Unknown tokenizer 'wordpiece'"):
    tk.get_tokenizer("wordpiece")


def test_tiktoken_offline_error_says_what_to_do(monkeypatch):
  tiktoken = pytest.importorskip("tiktoken", reason="the gpt2 tokenizer wraps tiktoken")

  def offline(name):
    raise ConnectionError(f"Failed to resolve 'openaipublic.blob.core.windows.net' for {name}")

  monkeypatch.setattr(tiktoken, "get_encoding", offline)
  with pytest.raises(RuntimeError, match="TIKTOKEN_CACHE_DIR.*'bytes' or 'bpe'"):
    tk.get_tokenizer("gpt2")


def test_tiktoken_gpt2_ids_when_available():
  pytest.importorskip("tiktoken", reason="the gpt2 tokenizer wraps tiktoken")
  try:
    tok = tk.get_tokenizer("gpt2")
  except RuntimeError:
    pytest.skip("tiktoken's gpt2 files are not cached here (offline)")
  assert (tok.vocab_size, tok.eot_id) == (50257, 50256)
  np.testing.assert_array_equal(tok.encode("Hello world"), [15496, 995])
