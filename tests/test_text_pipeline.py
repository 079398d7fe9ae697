"""data.text_pipeline: packing by hand-computed answers, mixture proportions,
source ids, per-source batches, exact resume from a saved iterator state, and
per-host reading (each process its own rows of the one-process batch)."""

import json

import grain
import numpy as np
import pytest

from data import text_pipeline
from data.text_pipeline import (
  TokenWindows,
  build_text_windows,
  eval_batches,
  local_batches,
  mixture_loader,
  pack_documents,
  per_source_loader,
)
from data.text_sources import load_source
from data.tokenizers import ByteTokenizer


def test_windows_are_shifted_by_one_and_never_cross_arrays():
  w = TokenWindows([np.arange(10), np.arange(100, 107)], seq_len=3)
  assert len(w) == 3 + 2  # (10 - 1) // 3 + (7 - 1) // 3
  np.testing.assert_array_equal(w[1]["inputs"], [3, 4, 5])
  np.testing.assert_array_equal(w[1]["targets"], [4, 5, 6])
  np.testing.assert_array_equal(w[4]["inputs"], [103, 104, 105])
  np.testing.assert_array_equal(w[4]["targets"], [104, 105, 106])
  assert w[0]["inputs"].dtype == np.int32
  with pytest.raises(IndexError):
    w[5]
  with pytest.raises(ValueError, match="no window of seq_len \\+ 1 = 11"):
    TokenWindows([np.arange(10)], seq_len=10)


def test_pack_documents_puts_eot_after_each_document():
  w = pack_documents(["ab", "cde"], ByteTokenizer(), seq_len=2)
  # stream: a b EOT c d e EOT = 97 98 0 99 100 101 0 -> 3 windows of 3
  assert len(w) == 3
  assert [list(w[i]["inputs"]) for i in range(3)] == [[97, 98], [0, 99], [100, 101]]
  assert [list(w[i]["targets"]) for i in range(3)] == [[98, 0], [99, 100], [101, 0]]
  with pytest.raises(ValueError, match="no documents"):
    pack_documents([], ByteTokenizer(), 2)


def _sources():
  """Three sources whose token ranges tell them apart: source k holds k*1000 + j."""
  return {
    name: TokenWindows([k * 1000 + np.arange(n * 8 + 1)], seq_len=8, name=name)
    for k, (name, n) in enumerate([("a", 50), ("b", 30), ("c", 20)])
  }


def _check_tokens_match_ids(batch):
  assert (batch["inputs"] // 1000 == batch["source_id"][:, None]).all()


def test_mixture_has_the_weights_and_tagged_sources():
  it = iter(mixture_loader(_sources(), [0.5, 0.3, 0.2], batch_size=10, seed=0))
  batches = [next(it) for _ in range(20)]
  for b in batches:
    assert b["inputs"].shape == (10, 8) and b["source_id"].shape == (10,)
    _check_tokens_match_ids(b)
  ids = np.concatenate([b["source_id"] for b in batches])
  np.testing.assert_array_equal(np.bincount(ids), [100, 60, 40])


def test_one_epoch_of_a_source_visits_every_window_once():
  src = {"a": _sources()["a"]}
  it = iter(mixture_loader(src, None, batch_size=10, seed=3))
  firsts = np.concatenate([next(it)["inputs"][:, 0] for _ in range(5)])
  np.testing.assert_array_equal(np.sort(firsts), np.arange(50) * 8)
  assert not (firsts == np.arange(50) * 8).all()  # shuffled


def test_resume_gives_exactly_the_same_next_batches():
  loader = mixture_loader(_sources(), [0.5, 0.3, 0.2], batch_size=6, seed=1)
  it = iter(loader)
  for _ in range(7):
    next(it)
  state = json.loads(json.dumps(it.get_state()))  # it is JSON, for the checkpoint
  expected = [next(it) for _ in range(4)]
  fresh = iter(mixture_loader(_sources(), [0.5, 0.3, 0.2], batch_size=6, seed=1))
  fresh.set_state(state)
  for want in expected:
    got = next(fresh)
    for key in want:
      np.testing.assert_array_equal(got[key], want[key])
  other_seed = next(iter(mixture_loader(_sources(), [0.5, 0.3, 0.2], batch_size=6, seed=2)))
  first = next(iter(loader))
  assert not (other_seed["inputs"] == first["inputs"]).all()


def test_per_source_loader_gives_every_source_each_step_and_resumes():
  it = iter(per_source_loader(_sources(), batch_size=4, seed=0))
  step = next(it)
  assert list(step) == ["a", "b", "c"]
  for k, name in enumerate("abc"):
    assert step[name]["inputs"].shape == (4, 8)
    np.testing.assert_array_equal(step[name]["source_id"], k)
    _check_tokens_match_ids(step[name])
  state = it.get_state()
  want = next(it)
  it.set_state(state)
  got = next(it)
  for name in "abc":
    np.testing.assert_array_equal(got[name]["inputs"], want[name]["inputs"])


def test_real_sources_and_eval_batches():
  windows = build_text_windows(
    ["prose", "math"],
    "validation",
    ByteTokenizer(),
    seq_len=64,
    max_chars=20_000,
    math_problems=2000,
  )
  docs = load_source("math", "validation", max_chars=20_000, math_problems=2000).documents
  num_tokens = sum(len(d.encode()) + 1 for d in docs)  # bytes + one EOT each
  assert windows["math"].num_tokens == num_tokens
  assert len(windows["math"]) == (num_tokens - 1) // 64
  batch = next(iter(mixture_loader(windows, [1, 1], batch_size=4)))
  # Targets are the inputs shifted by one.
  np.testing.assert_array_equal(batch["inputs"][:, 1:], batch["targets"][:, :-1])
  ev = eval_batches(windows["math"], batch_size=8, max_batches=3)
  assert len(ev) == 3
  np.testing.assert_array_equal(ev[1]["inputs"][0], windows["math"][8]["inputs"])
  with pytest.raises(ValueError, match="weights for 2 sources"):
    mixture_loader(windows, [1.0], 4)
  with pytest.raises(ValueError, match="> 0"):
    mixture_loader(windows, [1.0, 0.0], 4)


class _Counting(TokenWindows):
  """TokenWindows that records every window index it is asked for."""

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    self.reads = []

  def __getitem__(self, index):
    self.reads.append(int(index))
    return super().__getitem__(index)


@pytest.mark.parametrize("microbatches", [1, 2])
def test_processes_read_their_own_rows_which_together_are_the_one_process_batch(microbatches):
  """Per-host reading: 3 processes × 2 microbatches of a 12-row global batch. Process i's
  rows are block i of every microbatch of the one-process batch (same rows, same order),
  and it reads only those: over the steps, each window is read by one process, as many
  times as the one-process run reads it."""
  batch, steps, count = 12, 9, 3
  one = mixture_loader(_sources(), [0.5, 0.3, 0.2], batch, seed=4)
  one_batches = [b["inputs"] for b in (next(it) for it in [iter(one)] for _ in range(steps))]
  counting = {
    i: {n: _Counting(w.arrays, w.seq_len, n) for n, w in _sources().items()} for i in range(3)
  }
  local = {}
  for i in range(count):
    rows = local_batches_of(counting[i], batch, microbatches, (i, count), seed=4)
    local[i] = [rows[t]["inputs"] for t in range(steps)]
  for t in range(steps):
    whole = one_batches[t].reshape(microbatches, count, -1, 8)
    for i in range(count):
      np.testing.assert_array_equal(
        local[i][t].reshape(microbatches, -1, 8), whole[:, i], err_msg=f"step {t} process {i}"
      )
  # What each process read: exactly its rows (no window of another process's rows).
  one_reads = {n: _Counting(w.arrays, w.seq_len, n) for n, w in _sources().items()}
  rows = local_batches_of(one_reads, batch, microbatches, (0, 1), seed=4)
  for t in range(steps):
    rows[t]
  for n in one_reads:
    union = sorted(r for i in range(count) for r in counting[i][n].reads)
    assert union == sorted(one_reads[n].reads), n
    assert sum(len(counting[i][n].reads) for i in range(count)) == len(one_reads[n].reads)


def local_batches_of(sources, batch, microbatches, shard, seed):
  """The MapDataset of mixture_loader's batches (indexable, no prefetch: reads are exact)."""
  parts = [
    text_pipeline._examples(s, i, seed + 1000 * i, True) for i, s in enumerate(sources.values())
  ]
  mixed = grain.MapDataset.mix(parts, [0.5, 0.3, 0.2])
  return local_batches(mixed, batch, microbatches, shard)


def test_per_source_rows_of_two_processes_are_the_one_process_batches():
  one = next(iter(per_source_loader(_sources(), 8, seed=0, microbatches=2)))
  parts = [
    next(iter(per_source_loader(_sources(), 8, seed=0, microbatches=2, shard=(i, 2))))
    for i in range(2)
  ]
  for name in one:
    whole = one[name]["inputs"].reshape(2, 2, 2, 8)  # microbatch, process, row, token
    for i, part in enumerate(parts):
      np.testing.assert_array_equal(part[name]["inputs"].reshape(2, 2, 8), whole[:, i])


def test_rows_that_do_not_split_over_processes_name_the_fix():
  with pytest.raises(ValueError, match="pick a multiple of 6"):
    mixture_loader(_sources(), None, 8, microbatches=2, shard=(0, 3))
  with pytest.raises(ValueError, match="0 <= i < count"):
    mixture_loader(_sources(), None, 8, shard=(2, 2))
  stream = grain.MapDataset.source(_sources()["a"]).repeat().to_iter_dataset()
  with pytest.raises(ValueError, match="cannot be split over 2 processes"):
    mixture_loader({"a": stream}, None, 8, shard=(0, 2))
