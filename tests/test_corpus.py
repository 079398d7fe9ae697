"""data.corpus: every data.source kind on data the tests write (or tfds mock data)."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from data import corpus, tfds_text
from data.text_pipeline import build_text_windows, eval_batches, pack_documents
from data.tfds_text import tfds_documents
from data.token_shards import LLMC_MAGIC, write_shard
from data.tokenizers import ByteTokenizer


def _stream(windows) -> np.ndarray:
  """The token stream of seq_len-1 windows (window i = tokens i, i + 1)."""
  return np.concatenate(
    [windows[0]["inputs"]] + [windows[i]["targets"] for i in range(len(windows))]
  )


def _documents(windows) -> list[str]:
  """The byte-tokenized documents of seq_len-1 windows (EOT = byte 0)."""
  return ByteTokenizer().decode(_stream(windows)).split("\0")[:-1]


def _one_line_error(kind, match, fn, *args, **kwargs):
  with pytest.raises(kind, match=match) as info:
    fn(*args, **kwargs)
  assert "\n" not in str(info.value)


# ---------------------------------------------------------------- parsing


def test_parse_good_specs():
  assert corpus.parse_source("builtin") == corpus.Source("builtin", "", {})
  assert corpus.parse_source("").kind == "builtin"
  assert corpus.parse_source(" shards:d/{split}.bin ").argument == "d/{split}.bin"
  lm1b = corpus.parse_source("tfds:lm1b")
  assert (lm1b.argument, lm1b.options) == ("lm1b", {"split": "train", "validation": None})
  c4 = corpus.parse_source("tfds:c4/en:3.0.1:train[:10%],validation")
  assert c4.argument == "c4/en:3.0.1"
  assert c4.options == {"split": "train[:10%]", "validation": "validation"}
  text = corpus.parse_source("text:docs/*.md+docs/**/*.txt+~/notes.txt+*.rst")
  assert text.options["globs"] == ("docs/*.md", "docs/**/*.txt", "~/notes.txt", "*.rst")
  assert text.options["names"] == ("docs", "docs_2", "notes", "rst")
  assert corpus.source_names("builtin", ["prose", "math"]) == ["prose", "math"]
  assert corpus.source_names("shards:x/{split}.bin", ["prose"]) == ["shards"]
  assert corpus.source_names("tfds:c4/en:3.0.1", []) == ["c4_en"]
  assert corpus.implied_vocab_size("shards:x/{split}.bin") == 50257
  assert corpus.implied_vocab_size("text:a.txt") is None
  assert corpus.implied_vocab_size("builtin") is None


@pytest.mark.parametrize(
  "spec, match",
  [
    ("web:x", "Unknown data.source 'web:x'"),
    ("builtin:prose", "builtin takes no argument"),
    ("shards:", "nothing after 'shards:'"),
    ("shards:data/owt/train.bin", r"put \{split\} in the shard pattern"),
    ("tfds:bad name", r"expected tfds:NAME\[:SPLIT"),
    ("text:a/*.txt+", "empty glob"),
  ],
)
def test_parse_bad_specs(spec, match):
  _one_line_error(ValueError, match, corpus.parse_source, spec)


# ---------------------------------------------------------------- builtin


def test_builtin_is_build_text_windows():
  tok = ByteTokenizer()
  for split, names in (("train", ["math"]), ("validation", ["math"]), ("test", ["math_ood"])):
    got = corpus.load_windows("builtin", split, tok, 16, sources=names, max_chars=3000)
    want = build_text_windows(names, split, tok, 16, max_chars=3000)
    assert list(got) == names
    for name in names:
      assert len(got[name].arrays) == len(want[name].arrays) == 1
      np.testing.assert_array_equal(got[name].arrays[0], want[name].arrays[0])
      assert got[name].arrays[0].dtype == want[name].arrays[0].dtype
  texts = corpus.training_texts("builtin", ["math"], max_chars=3000)
  assert 0 < sum(map(len, texts)) <= 3000 and texts[0].startswith("What is")
  corpus.check_source("builtin", ["prose", "code", "math"])
  _one_line_error(ValueError, "has the sources prose", corpus.check_source, "builtin", ["web"])


# ---------------------------------------------------------------- shards


def _shard_dirs(tmp_path):
  owt, fineweb = tmp_path / "owt", tmp_path / "fineweb10B"
  owt.mkdir()
  fineweb.mkdir()
  write_shard(str(owt / "train.bin"), np.arange(21), llmc_header=False)  # nanoGPT
  write_shard(str(owt / "val.bin"), 1000 + np.arange(11), llmc_header=False)
  write_shard(str(fineweb / "fineweb_train_000001.bin"), np.arange(11))  # llm.c
  write_shard(str(fineweb / "fineweb_train_000002.bin"), 50000 + np.arange(6))
  write_shard(str(fineweb / "fineweb_val_000000.bin"), 2000 + np.arange(6))
  return f"shards:{owt}/{{split}}.bin", f"shards:{fineweb}/fineweb_{{split}}_*.bin"


def test_shards_train_and_validation(tmp_path):
  nanogpt, llmc = _shard_dirs(tmp_path)
  for spec in (nanogpt, llmc):
    corpus.check_source(spec, ["prose"])
  train = corpus.load_windows(nanogpt, "train", None, 5, sources=["prose"])["shards"]
  assert len(train) == 4
  np.testing.assert_array_equal(train[3]["inputs"], [15, 16, 17, 18, 19])
  np.testing.assert_array_equal(train[3]["targets"], [16, 17, 18, 19, 20])
  val = corpus.load_windows(nanogpt, "validation", None, 5, sources=[])["shards"]
  np.testing.assert_array_equal(val[1]["inputs"], [1005, 1006, 1007, 1008, 1009])
  windows = corpus.load_windows(llmc, "train", None, 5, sources=[], vocab_size=50257)
  assert list(windows) == ["shards"] and len(windows["shards"]) == 2 + 1
  np.testing.assert_array_equal(windows["shards"][2]["targets"], 50001 + np.arange(5))
  val = corpus.load_windows(llmc, "validation", None, 5, sources=[])["shards"]
  batch = next(iter(eval_batches(val, batch_size=1)))
  np.testing.assert_array_equal(batch["inputs"], [2000 + np.arange(5)])
  _one_line_error(
    ValueError,
    "fineweb_train_000002.bin: token id 50005 >= the model.s vocab_size 50000",
    corpus.load_windows,
    llmc,
    "train",
    None,
    5,
    sources=[],
    vocab_size=50000,
  )
  _one_line_error(
    ValueError, "only builtin has OOD", corpus.load_windows, llmc, "test", None, 5, sources=[]
  )
  _one_line_error(ValueError, "pre-tokenized", corpus.training_texts, llmc, [])


def test_bad_shards_fail_in_one_line(tmp_path):
  _one_line_error(ValueError, r"put \{split\}", corpus.check_source, f"shards:{tmp_path}/x.bin", [])
  _one_line_error(
    FileNotFoundError,
    "No token shards match",
    corpus.check_source,
    f"shards:{tmp_path}/{{split}}.bin",
    [],
  )
  write_shard(str(tmp_path / "train.bin"), np.arange(10))
  (tmp_path / "val.bin").write_bytes(b"")
  spec = f"shards:{tmp_path}/{{split}}.bin"
  _one_line_error(ValueError, "val.bin' is empty", corpus.check_source, spec, [])
  (tmp_path / "val.bin").unlink()
  (tmp_path / "val.bin").mkdir()
  _one_line_error(ValueError, "val.bin' is a directory", corpus.check_source, spec, [])
  (tmp_path / "val.bin").rmdir()
  header = np.zeros(256, "<i4")
  header[:3] = (LLMC_MAGIC, 2, 0)
  (tmp_path / "val.bin").write_bytes(header.tobytes())
  _one_line_error(ValueError, "val.bin': llm.c header version 2", corpus.check_source, spec, [])


# ---------------------------------------------------------------- text files


def _write_texts(tmp_path):
  files = {
    "essays/a.txt": "alpha essay\n",
    "essays/b.txt": "beta essay\n",
    "essays/c.txt": "gamma essay ü\n",
    "notes/x.md": "# x notes\n",
    "notes/deep/y.md": "# y notes\n",
  }
  for rel, text in files.items():
    (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / rel).write_text(text, encoding="utf-8")
  return files


def test_text_sources_split_by_file(tmp_path):
  files = _write_texts(tmp_path)
  spec = f"text:{tmp_path}/essays/*.txt+{tmp_path}/notes/**/*.md"
  corpus.check_source(spec, ["prose"])
  assert corpus.source_names(spec, ["prose"]) == ["essays", "notes"]
  tok = ByteTokenizer()
  train = corpus.load_windows(spec, "train", tok, 1, sources=["prose"])
  val = corpus.load_windows(spec, "validation", tok, 1, sources=["prose"])
  assert list(train) == list(val) == ["essays", "notes"]
  for name in ("essays", "notes"):
    want = {t for rel, t in files.items() if rel.startswith(name)}
    got_train, got_val = _documents(train[name]), _documents(val[name])
    assert got_train and got_val and not set(got_train) & set(got_val)
    assert set(got_train) | set(got_val) == want
  # Pinned: the split is a hash of the path under the glob's directory, the same everywhere.
  assert _documents(val["essays"]) == ["alpha essay\n"]
  assert _documents(val["notes"]) == ["# x notes\n"]
  again = corpus.load_windows(spec, "validation", tok, 1, sources=[])
  np.testing.assert_array_equal(again["essays"].arrays[0], val["essays"].arrays[0])
  assert corpus.training_texts(spec, []) == ["beta essay\n", "gamma essay ü\n", "# y notes\n"]
  capped = corpus.load_windows(spec, "train", tok, 1, sources=[], max_chars=15)["essays"]
  assert _documents(capped) == ["beta essay\n", "gamm"]


def test_single_text_file_splits_its_text(tmp_path):
  text = "".join(f"line {i}\n" for i in range(20))
  (tmp_path / "book.txt").write_text(text)
  spec = f"text:{tmp_path}/book.txt"
  assert corpus.source_names(spec, []) == ["book"]
  train = corpus.load_windows(spec, "train", ByteTokenizer(), 1, sources=[])["book"]
  val = corpus.load_windows(spec, "validation", ByteTokenizer(), 1, sources=[])["book"]
  (got_train,), (got_val,) = _documents(train), _documents(val)
  assert got_train + got_val == text
  assert got_val == "line 19\n"  # 90% of the characters (in line 18), then to its end


def test_bad_text_files_fail_in_one_line(tmp_path):
  _write_texts(tmp_path)
  _one_line_error(
    FileNotFoundError, "No files match the glob", corpus.check_source, f"text:{tmp_path}/*.pdf", []
  )
  _one_line_error(
    ValueError, "is a directory; give its files", corpus.check_source, f"text:{tmp_path}/essays", []
  )
  _one_line_error(
    FileNotFoundError, "does not exist", corpus.check_source, f"text:{tmp_path}/none.txt", []
  )
  (tmp_path / "essays" / "latin1.txt").write_bytes("café\n".encode("latin-1"))
  spec = f"text:{tmp_path}/essays/*.txt"
  _one_line_error(
    ValueError, r"latin1.txt' is not UTF-8 \(byte 0xe9 at offset 3\)", corpus.check_source, spec, []
  )
  _one_line_error(
    ValueError, "is not UTF-8", corpus.load_windows, spec, "validation", None, 1, sources=[]
  )
  (tmp_path / "essays" / "latin1.txt").write_bytes(b"")
  _one_line_error(ValueError, "latin1.txt' is empty", corpus.check_source, spec, [])


# ---------------------------------------------------------------- tfds


def test_tfds_mock_data_train_and_validation():
  tok = ByteTokenizer()
  with tfds.testing.mock_data(num_examples=40):  # str records, every split alike
    corpus.check_source("tfds:lm1b", [])
    train = corpus.load_windows("tfds:lm1b", "train", tok, 8, sources=["prose"])
    assert list(train) == ["lm1b"]
    docs = tfds_documents("lm1b", "train")
    want = pack_documents([docs[i] for i in range(len(docs))], tok, 8)
    np.testing.assert_array_equal(train["lm1b"].arrays[0], want.arrays[0])
    capped = corpus.load_windows("tfds:lm1b", "validation", tok, 1, sources=[], max_chars=30)
    assert "".join(_documents(capped["lm1b"])) == "".join(docs[i] for i in range(5))[:30]


def _split_records(builder, split=None, **kwargs):
  """as_data_source for mock_data: bytes records (as real data) naming their split."""
  del builder, kwargs
  return [{"text": f"{split} document {i}".encode()} for i in range(6)]


def test_tfds_picks_the_validation_split(monkeypatch):
  tok = ByteTokenizer()
  with tfds.testing.mock_data(as_data_source_fn=_split_records):
    train = corpus.load_windows("tfds:c4/en", "train", tok, 1, sources=[])["c4_en"]
    assert _documents(train) == [f"train document {i}" for i in range(6)]
    val = corpus.load_windows("tfds:c4/en", "validation", tok, 4, sources=[])["c4_en"]
    batch = next(iter(eval_batches(val, batch_size=2)))
    assert tok.decode(batch["inputs"][0]) == "vali"
    spec = "tfds:c4/en:train[:3],test"
    train = corpus.load_windows(spec, "train", tok, 1, sources=[])["c4_en"]
    assert _documents(train)[0] == "train[:3] document 0"
    assert corpus.training_texts(spec, [])[0] == "train[:3] document 0"
    val = corpus.load_windows(spec, "validation", tok, 1, sources=[])["c4_en"]
    assert _documents(val)[0] == "test document 0"
    monkeypatch.setattr(tfds_text, "tfds_split_names", lambda *a: ["train", "test"])
    val = corpus.load_windows("tfds:c4/en", "validation", tok, 1, sources=[])["c4_en"]
    assert _documents(val)[0] == "test document 0"
    monkeypatch.setattr(tfds_text, "tfds_split_names", lambda *a: ["train"])
    _one_line_error(
      ValueError, "no 'validation' or 'test' split", corpus.check_source, "tfds:c4/en", []
    )
