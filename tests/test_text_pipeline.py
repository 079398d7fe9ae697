"""data.text_pipeline: packing by hand-computed answers, mixture proportions,
source ids, per-source batches and exact resume from a saved iterator state."""

import json

import numpy as np
import pytest

from data.text_pipeline import (
  TokenWindows,
  build_text_windows,
  eval_batches,
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
