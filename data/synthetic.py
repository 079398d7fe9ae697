"""Synthetic tasks a two-layer ReLU network can fit to zero training loss.

Every task is a deterministic function of its arguments and ``seed`` (numpy's
PCG64, so the same arrays on every machine); train and test points are drawn
from the same distribution. Targets are (n, out_dim) float32.

- "teacher": y = Σⱼ a*ⱼ·relu(w*ⱼ·x) from a planted network of width m*
  (w*ⱼ ~ N(0, I/d), a*ⱼ = ±1/√m*), plus optional Gaussian label noise.
- "teacher_sign": y = ±1, the sign of the centred teacher output (logistic).
- "random_labels": y = ±1 uniformly at random (memorization; logistic or squared).
- "random_regression": y ~ N(0, 1) at a few points (the small-n, small-width
  regime; zero loss needs width ≳ n).

Inputs ("input_dist") are "gaussian" N(0, I_d) or "sphere", uniform on the
sphere of radius √d (same scale as the Gaussian, without the norm spread).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

TASKS = ("teacher", "teacher_sign", "random_labels", "random_regression")
INPUT_DISTS = ("gaussian", "sphere")
LOSSES = ("squared", "logistic")
CLASSIFICATION_TASKS = ("teacher_sign", "random_labels")


class Dataset(NamedTuple):
  x_train_NxD: np.ndarray
  y_train_NxO: np.ndarray
  x_test_TxD: np.ndarray
  y_test_TxO: np.ndarray


def sample_inputs(rng: np.random.Generator, n: int, input_dim: int, dist: str) -> np.ndarray:
  x = rng.standard_normal((n, input_dim))
  if dist == "sphere":
    x = x / np.linalg.norm(x, axis=1, keepdims=True) * np.sqrt(input_dim)
  elif dist != "gaussian":
    raise ValueError(f"Unknown input_dist {dist!r}; known: {INPUT_DISTS}.")
  return x


def teacher_outputs(rng: np.random.Generator, x_NxD: np.ndarray, teacher_width: int) -> np.ndarray:
  """The planted network's outputs (n, 1); its weights come from ``rng``."""
  w_DxK = rng.standard_normal((x_NxD.shape[1], teacher_width)) / np.sqrt(x_NxD.shape[1])
  a_K = rng.choice([-1.0, 1.0], teacher_width) / np.sqrt(teacher_width)
  return (np.maximum(x_NxD @ w_DxK, 0.0) @ a_K)[:, None]


def make_task(
  task: str = "teacher",
  input_dim: int = 8,
  n_train: int = 256,
  n_test: int = 1024,
  teacher_width: int = 4,
  input_dist: str = "gaussian",
  label_noise: float = 0.0,
  seed: int = 0,
) -> Dataset:
  """The train/test split of ``task`` (see the module docstring)."""
  if task not in TASKS:
    raise ValueError(f"Unknown synthetic task {task!r}; known: {TASKS}.")
  if min(input_dim, n_train, teacher_width) < 1 or n_test < 0:
    raise ValueError(
      f"Synthetic task needs input_dim, n_train, teacher_width >= 1 and "
      f"n_test >= 0; got {input_dim}, {n_train}, {teacher_width}, {n_test}."
    )
  # Separate streams so that, e.g., changing n_test leaves the train set alone.
  rng_x, rng_teacher, rng_y = (np.random.default_rng([seed, i]) for i in range(3))
  x = sample_inputs(rng_x, n_train + n_test, input_dim, input_dist)
  if task in ("teacher", "teacher_sign"):
    y = teacher_outputs(rng_teacher, x, teacher_width)
    if task == "teacher_sign":
      y = np.where(y > np.median(y[:n_train]), 1.0, -1.0)
    else:
      y = y + label_noise * rng_y.standard_normal(y.shape)
  elif task == "random_labels":
    y = rng_y.choice([-1.0, 1.0], (n_train + n_test, 1))
  else:
    y = rng_y.standard_normal((n_train + n_test, 1))
  x, y = x.astype(np.float32), y.astype(np.float32)
  return Dataset(x[:n_train], y[:n_train], x[n_train:], y[n_train:])


def squared_loss(pred_BxO: jax.Array, y_BxO: jax.Array) -> jax.Array:
  """½·mean over the batch of ‖f(x) − y‖²."""
  return 0.5 * jnp.mean(jnp.sum(jnp.square(pred_BxO - y_BxO), axis=-1))


def logistic_loss(pred_BxO: jax.Array, y_BxO: jax.Array) -> jax.Array:
  """mean log(1 + exp(−y·f(x))) for labels y = ±1."""
  return jnp.mean(jax.nn.softplus(-y_BxO * pred_BxO))


def sign_accuracy(pred_BxO: jax.Array, y_BxO: jax.Array) -> jax.Array:
  return jnp.mean((jnp.sign(pred_BxO) == y_BxO).astype(jnp.float32))


def get_loss(name: str):
  if name == "squared":
    return squared_loss
  if name == "logistic":
    return logistic_loss
  raise ValueError(f"Unknown loss {name!r}; known: {LOSSES}.")
