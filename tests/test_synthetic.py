"""data/synthetic.py and data/batching.py: deterministic tasks and resumable order."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from data import batching, synthetic


@pytest.mark.parametrize("task", synthetic.TASKS)
def test_tasks_are_deterministic_and_seeded(task):
  a = synthetic.make_task(task, input_dim=5, n_train=32, n_test=16, seed=3)
  b = synthetic.make_task(task, input_dim=5, n_train=32, n_test=16, seed=3)
  c = synthetic.make_task(task, input_dim=5, n_train=32, n_test=16, seed=4)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  assert not np.array_equal(a.x_train_NxD, c.x_train_NxD)
  assert a.x_train_NxD.shape == (32, 5) and a.y_train_NxO.shape == (32, 1)
  assert a.x_test_TxD.shape == (16, 5) and a.y_test_TxO.dtype == np.float32
  if task in synthetic.CLASSIFICATION_TASKS:
    assert set(np.unique(a.y_train_NxO)) == {-1.0, 1.0}


def test_teacher_targets_come_from_a_relu_network():
  # The targets are a width-m* ReLU network of x: positively homogeneous, so
  # scaling the inputs by 2 (same teacher, same seed) doubles them.
  d = synthetic.make_task("teacher", input_dim=6, n_train=64, n_test=0, teacher_width=3)
  rng = np.random.default_rng([0, 1])  # The teacher's stream (see make_task).
  y2 = synthetic.teacher_outputs(rng, 2 * d.x_train_NxD.astype(np.float64), 3)
  np.testing.assert_allclose(y2, 2 * d.y_train_NxO, rtol=1e-5, atol=1e-6)
  assert np.std(d.y_train_NxO) > 0.1


def test_sphere_inputs_have_norm_sqrt_d():
  d = synthetic.make_task("teacher", input_dim=9, n_train=50, input_dist="sphere")
  np.testing.assert_allclose(np.linalg.norm(d.x_train_NxD, axis=1), 3.0, rtol=1e-5)


def test_changing_n_test_keeps_the_train_targets_function():
  a = synthetic.make_task("teacher", n_train=20, n_test=5)
  b = synthetic.make_task("teacher", n_train=20, n_test=50)
  np.testing.assert_array_equal(a.x_train_NxD, b.x_train_NxD)
  np.testing.assert_array_equal(a.y_train_NxO, b.y_train_NxO)


def test_losses():
  pred, y = jnp.array([[1.0], [-2.0]]), jnp.array([[0.0], [-1.0]])
  np.testing.assert_allclose(synthetic.squared_loss(pred, y), 0.5 * (1 + 1) / 2)
  np.testing.assert_allclose(
    synthetic.logistic_loss(jnp.zeros((3, 1)), jnp.ones((3, 1))), np.log(2), rtol=1e-6
  )
  np.testing.assert_allclose(synthetic.sign_accuracy(pred, jnp.array([[1.0], [1.0]])), 0.5)
  with pytest.raises(ValueError, match="Unknown loss"):
    synthetic.get_loss("hinge")


def test_bad_task_arguments():
  with pytest.raises(ValueError, match="Unknown synthetic task 'cifar'"):
    synthetic.make_task("cifar")
  with pytest.raises(ValueError, match="input_dist"):
    synthetic.make_task("teacher", input_dist="uniform")


def test_batches_are_an_epochwise_permutation_per_key():
  key = jax.random.PRNGKey(0)
  epoch0 = np.concatenate(
    [np.asarray(batching.batch_indices(key, jnp.int32(s), 20, 5)) for s in range(4)]
  )
  epoch1 = np.concatenate(
    [np.asarray(batching.batch_indices(key, jnp.int32(s), 20, 5)) for s in range(4, 8)]
  )
  assert sorted(epoch0) == list(range(20)) and sorted(epoch1) == list(range(20))
  assert not np.array_equal(epoch0, epoch1)  # A fresh order each epoch.
  other = np.asarray(batching.batch_indices(jax.random.PRNGKey(1), jnp.int32(0), 20, 5))
  assert not np.array_equal(other, epoch0[:5])  # Each seed its own order.
  # Jittable, and a pure function of (key, step): the resume relies on it.
  jitted = jax.jit(batching.batch_indices, static_argnums=(2, 3))
  np.testing.assert_array_equal(jitted(key, jnp.int32(6), 20, 5), epoch1[10:15])


def test_iterator_state():
  assert batching.is_full_batch(10, 0) and batching.is_full_batch(10, 10)
  assert batching.iterator_state(7, 20, 5)["epoch"] == 1
  assert batching.iterator_state(7, 20, 5)["position_in_epoch"] == 3
  assert batching.iterator_state(7, 20, 0)["kind"] == "full_batch"
