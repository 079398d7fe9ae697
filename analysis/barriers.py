"""Loss barriers along paths, in both definitions in use.

For losses L(θ_t) sampled at t_1 < … < t_T along a path from a to b:

- "mean" (Frankle, Dziugaite, Roy, Carbin, "Linear Mode Connectivity and the
  Lottery Ticket Hypothesis", ICML 2020):
      B = max_t L(θ_t) − ½·(L(a) + L(b))
- "linear" (Entezari, Sedghi, Saukh, Neyshabur, "The Role of Permutation
  Invariance in Linear Mode Connectivity of Neural Networks", ICLR 2022):
      B = max_t [L(θ_t) − ((1 − t)·L(a) + t·L(b))]

They agree when L(a) = L(b); otherwise "mean" charges the path for the gap
between the endpoints, "linear" does not. Both are maxima over the grid ts, so
they are lower bounds of the continuous maximum (finer ts, tighter). Only
t ∈ [0, 1] counts (extrapolated points are ignored). Everything vectorizes
over leading axes (pairs): losses (..., T) give barriers (...), and jits.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

BARRIER_KINDS = ("mean", "linear")


class Barrier(NamedTuple):
  """The barrier height and the t where the maximum sits, each of shape (...)."""

  height: jnp.ndarray
  t_max: jnp.ndarray


def loss_barrier(losses, ts, kind: str = "mean", loss_a=None, loss_b=None) -> Barrier:
  """The ``kind`` barrier of ``losses`` (..., T) sampled at ``ts`` (T,).

  L(a), L(b) default to the losses at t = 0 and t = 1, which ``ts`` must then
  contain; pass them to override (e.g. when ts leaves out the endpoints)."""
  if kind not in BARRIER_KINDS:
    raise ValueError(f"Unknown barrier kind {kind!r}; known: {BARRIER_KINDS}.")
  losses, ts = jnp.asarray(losses), jnp.asarray(ts)
  if ts.ndim != 1 or losses.shape[-1:] != ts.shape:
    raise ValueError(f"losses (..., T) and ts (T,) disagree: {losses.shape} vs {ts.shape}.")
  loss_a = _endpoint_loss(losses, ts, 0.0) if loss_a is None else jnp.asarray(loss_a)
  loss_b = _endpoint_loss(losses, ts, 1.0) if loss_b is None else jnp.asarray(loss_b)
  if kind == "mean":
    baseline = 0.5 * (loss_a + loss_b)[..., None]
  else:
    baseline = (1.0 - ts) * loss_a[..., None] + ts * loss_b[..., None]
  excess = jnp.where((ts >= 0.0) & (ts <= 1.0), losses - baseline, -jnp.inf)
  idx = jnp.argmax(excess, axis=-1)
  return Barrier(jnp.max(excess, axis=-1), ts[idx])


def loss_barriers(losses, ts, loss_a=None, loss_b=None) -> dict[str, Barrier]:
  """Both definitions: {"mean": Barrier, "linear": Barrier}."""
  return {kind: loss_barrier(losses, ts, kind, loss_a, loss_b) for kind in BARRIER_KINDS}


def barrier_matrix(
  values_P, pairs, num_models: int, diagonal: float = 0.0, symmetric: bool = True
) -> np.ndarray:
  """Scatters per-pair values into an N×N matrix (NaN where no pair was given)."""
  values_P, pairs = np.asarray(values_P), np.asarray(pairs)
  if pairs.ndim != 2 or pairs.shape[1] != 2 or values_P.shape != (pairs.shape[0],):
    raise ValueError(f"values_P (P,) and pairs (P, 2) disagree: {values_P.shape} vs {pairs.shape}.")
  if pairs.size and (pairs.min() < 0 or pairs.max() >= num_models):
    raise ValueError(f"pairs index models outside [0, {num_models}).")
  matrix = np.full((num_models, num_models), np.nan)
  np.fill_diagonal(matrix, diagonal)
  matrix[pairs[:, 0], pairs[:, 1]] = values_P
  if symmetric:
    matrix[pairs[:, 1], pairs[:, 0]] = values_P
  return matrix


def _endpoint_loss(losses, ts, t_end: float):
  """The loss at the t nearest t_end (checked to be t_end when ts is concrete)."""
  idx = jnp.argmin(jnp.abs(ts - t_end))
  if not isinstance(ts, jax.core.Tracer):
    if not np.isclose(float(ts[idx]), t_end, atol=1e-6):
      raise ValueError(
        f"ts has no t = {t_end}: include the endpoints in ts or pass loss_a and loss_b."
      )
  return jnp.take(losses, idx, axis=-1)
