"""data.tfds_text with tfds.testing.mock_data (str) and byte records (as real data)."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from data.text_pipeline import mixture_loader, per_source_loader
from data.tfds_text import TfdsDocuments, tfds_documents, tfds_token_stream
from data.tokenizers import ByteTokenizer


def test_mock_lm1b_and_c4_documents_are_str():
  with tfds.testing.mock_data(num_examples=7):
    docs = tfds_documents("lm1b", "train")
    assert len(docs) == 7 and all(isinstance(docs[i], str) and docs[i] for i in range(7))
    c4 = tfds_documents("c4/en", "validation")  # registered by tensorflow_datasets.text
    assert len(c4) == 7 and isinstance(c4[0], str)
    with pytest.raises(KeyError, match="no field 'body'.*'text'"):
      tfds_documents("lm1b", "train", text_key="body")[0]


def test_bytes_records_decode_and_bad_ones_fail():
  docs = TfdsDocuments(
    [{"text": "héllo".encode()}, {"text": b"\xff\xfe"}, {"text": 3}], "fake", "train", "text"
  )
  assert docs[0] == "héllo"
  with pytest.raises(ValueError, match="example 1.*not valid UTF-8"):
    docs[1]
  with pytest.raises(TypeError, match="holds int"):
    docs[2]
  with pytest.raises(ValueError, match="no examples"):
    TfdsDocuments([], "fake", "train", "text")


def test_stream_packs_documents_with_eot_in_order():
  docs = TfdsDocuments([{"text": t} for t in (b"abcd", b"efghij", b"kl")], "fake", "train", "text")
  it = iter(tfds_token_stream(docs, ByteTokenizer(), seq_len=4, shuffle=False))
  windows = [next(it) for _ in range(6)]
  # The stream abcd·efghij·kl·abcd·... cut into windows of 5 (· is EOT = 0).
  stream = np.concatenate([np.frombuffer(b"abcd\0efghij\0kl\0", np.uint8)] * 3).astype(np.int32)
  for k, w in enumerate(windows):
    np.testing.assert_array_equal(w["inputs"], stream[5 * k : 5 * k + 4])
    np.testing.assert_array_equal(w["targets"], stream[5 * k + 1 : 5 * k + 5])


def test_mixture_of_tfds_streams_resumes_exactly():
  with tfds.testing.mock_data(num_examples=30):
    tok = ByteTokenizer()
    sources = {
      "lm1b": tfds_token_stream(tfds_documents("lm1b", "train"), tok, 16, seed=0),
      "c4": tfds_token_stream(tfds_documents("c4/en", "train"), tok, 16, seed=1),
    }
    it = iter(mixture_loader(sources, [0.75, 0.25], batch_size=4))
    for _ in range(5):
      next(it)
    state = it.get_state()
    want = [next(it) for _ in range(3)]
    it.set_state(state)
    for w in want:
      got = next(it)
      np.testing.assert_array_equal(got["inputs"], w["inputs"])
      np.testing.assert_array_equal(got["source_id"], [0, 0, 0, 1])
    step = next(iter(per_source_loader(sources, batch_size=2)))
    assert step["c4"]["inputs"].shape == (2, 16)
    np.testing.assert_array_equal(step["c4"]["source_id"], [1, 1])


def test_missing_or_unknown_datasets_fail_clearly(tmp_path):
  with pytest.raises(FileNotFoundError, match="array_record"):
    tfds_documents("lm1b", "train", data_dir=str(tmp_path))
  with pytest.raises(ValueError, match="no dataset 'no_such_corpus'"):
    tfds_documents("no_such_corpus", "train")
