"""data.token_shards on files the test writes in both formats."""

import numpy as np
import pytest

from data.text_pipeline import mixture_loader
from data.token_shards import LLMC_MAGIC, read_shard, shard_windows, write_shard


def test_llmc_shard_header_and_tokens(tmp_path):
  tokens = np.random.default_rng(0).integers(0, 50257, 1000)
  path = str(tmp_path / "fineweb_train_000001.bin")
  write_shard(path, tokens)
  header = np.fromfile(path, "<i4", count=256)
  assert list(header[:3]) == [LLMC_MAGIC, 1, 1000] and not header[3:].any()
  assert (tmp_path / "fineweb_train_000001.bin").stat().st_size == 1024 + 2000
  got = read_shard(path)
  assert isinstance(got, np.memmap) and got.dtype == np.uint16
  np.testing.assert_array_equal(got, tokens)


def test_nanogpt_bare_uint16_shard(tmp_path):
  tokens = np.arange(0, 30000, 7, dtype=np.uint16)
  path = str(tmp_path / "train.bin")
  # As nanoGPT's prepare.py writes it.
  arr = np.memmap(path, dtype=np.uint16, mode="w+", shape=tokens.shape)
  arr[:] = tokens
  arr.flush()
  np.testing.assert_array_equal(read_shard(path), tokens)


def test_windows_over_several_shards(tmp_path):
  write_shard(str(tmp_path / "s_0.bin"), np.arange(21))
  write_shard(str(tmp_path / "s_1.bin"), 100 + np.arange(11), llmc_header=False)
  w = shard_windows(str(tmp_path / "s_*.bin"), seq_len=5)
  assert len(w) == 4 + 2
  np.testing.assert_array_equal(w[3]["inputs"], [15, 16, 17, 18, 19])
  np.testing.assert_array_equal(w[3]["targets"], [16, 17, 18, 19, 20])
  np.testing.assert_array_equal(w[5]["inputs"], [105, 106, 107, 108, 109])
  batch = next(iter(mixture_loader({"web": w}, None, batch_size=6, seed=0)))
  np.testing.assert_array_equal(np.sort(batch["inputs"][:, 0]), [0, 5, 10, 15, 100, 105])
  with pytest.raises(ValueError, match="s_1.bin: token id 110 >= the model.s vocab_size 50"):
    shard_windows(str(tmp_path / "s_*.bin"), seq_len=5, vocab_size=50)


def test_bad_shards_fail_clearly(tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    read_shard(str(tmp_path / "missing.bin"))
  with pytest.raises(FileNotFoundError, match="No token shards match"):
    shard_windows(str(tmp_path / "*.bin"), 4)
  (tmp_path / "empty.bin").write_bytes(b"")
  with pytest.raises(ValueError, match="empty"):
    read_shard(str(tmp_path / "empty.bin"))
  (tmp_path / "odd.bin").write_bytes(b"abc")
  with pytest.raises(ValueError, match="odd size"):
    read_shard(str(tmp_path / "odd.bin"))
  write_shard(str(tmp_path / "cut.bin"), np.arange(100))
  data = (tmp_path / "cut.bin").read_bytes()
  (tmp_path / "cut.bin").write_bytes(data[:-10])
  with pytest.raises(ValueError, match="promises 100 tokens"):
    read_shard(str(tmp_path / "cut.bin"))
  header = np.zeros(256, "<i4")
  header[:3] = (LLMC_MAGIC, 2, 0)
  (tmp_path / "v2.bin").write_bytes(header.tobytes())
  with pytest.raises(ValueError, match="version 2"):
    read_shard(str(tmp_path / "v2.bin"))
  with pytest.raises(ValueError, match="65535"):
    write_shard(str(tmp_path / "big.bin"), [70000])
