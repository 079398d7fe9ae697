"""training.host_data: the per-process iterator states of a checkpoint and how a resumed
process picks its own (the multi-process path itself runs in test_multiprocess_train.py)."""

import jax
import numpy as np
import pytest

from training import host_data
from training.errors import ConfigError


def _as_process(monkeypatch, index: int, count: int) -> None:
  monkeypatch.setattr(jax, "process_index", lambda: index)
  monkeypatch.setattr(jax, "process_count", lambda: count)


def test_one_process_reads_everything_and_records_one_state():
  mesh = jax.make_mesh((1,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  assert host_data.process_block(mesh) == (0, 1)
  record = host_data.iterator_record(7, {"next_index": 7})
  assert record == {"step": 7, "grain": {"next_index": 7}}
  assert host_data.own_state(record) == {"next_index": 7}
  x = np.arange(12).reshape(2, 3, 2)
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(None, "data"))
  np.testing.assert_array_equal(host_data.global_batch(x, sharding, 1, 1), x)


def test_a_resumed_process_takes_its_own_state(monkeypatch):
  record = {"step": 4, "grain": {"i": 0}, "by_process": [{"i": 0}, {"i": 1}]}
  _as_process(monkeypatch, 1, 2)
  assert host_data.own_state(record) == {"i": 1}


def test_equal_states_resume_on_another_process_count(monkeypatch):
  record = {"step": 4, "grain": {"next_index": 4}, "by_process": [{"next_index": 4}] * 2}
  _as_process(monkeypatch, 2, 4)
  assert host_data.own_state(record) == {"next_index": 4}
  _as_process(monkeypatch, 0, 1)
  assert host_data.own_state(record) == {"next_index": 4}
  # A one-process checkpoint resumes on two processes.
  _as_process(monkeypatch, 1, 2)
  assert host_data.own_state({"step": 4, "grain": {"next_index": 4}}) == {"next_index": 4}


def test_differing_states_refuse_another_process_count_in_one_line(monkeypatch):
  record = {"step": 4, "grain": {"i": 0}, "by_process": [{"i": 0}, {"i": 1}]}
  _as_process(monkeypatch, 0, 4)
  with pytest.raises(ConfigError, match="resume with 2 processes"):
    host_data.own_state(record)
