"""The sources' gradient cosines at θ: logged by the trainer (GPT-2 with
several sources) and measured by analysis.source_geometry.

Source batches are stacked on a leading axis K (every leaf (K, ...)); the
gradients of all K sources come from one vmapped call.
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging


def num_sources(source_batches) -> int:
  sizes = {x.shape[0] for x in jax.tree.leaves(source_batches)}
  if len(sizes) != 1:
    raise ValueError(
      f"Every leaf of source_batches needs the same leading source axis K; "
      f"got sizes {sorted(sizes)}."
    )
  return sizes.pop()


def source_gradients(loss_fn: Callable[[Any, Any], jax.Array], params, source_batches):
  """∇L_s(θ) for every source: the params' pytree with a leading axis K."""
  num_sources(source_batches)
  return jax.vmap(jax.grad(loss_fn), in_axes=(None, 0))(params, source_batches)


def cosine_matrix(grads_K) -> jax.Array:
  """K×K cosine similarities of K gradient pytrees stacked on axis 0 (0 for a zero gradient)."""
  flat_KxP = jnp.concatenate(
    [g.reshape(g.shape[0], -1).astype(jnp.float32) for g in jax.tree.leaves(grads_K)], axis=1
  )
  norms_K = jnp.linalg.norm(flat_KxP, axis=1)
  unit_KxP = flat_KxP / jnp.where(norms_K > 0, norms_K, 1.0)[:, None]
  return unit_KxP @ unit_KxP.T


@jax.jit
def _mean_off_diagonal(cos_KxK):
  k = cos_KxK.shape[0]
  return (jnp.sum(cos_KxK) - jnp.trace(cos_KxK)) / max(k * (k - 1), 1)


def gradient_similarity(loss_fn, params, source_batches) -> dict:
  """{"cosine": K×K matrix, "mean_pairwise": mean off-diagonal cosine,
  "grad_norms": (K,)} of the sources' gradients at ``params``."""
  grads_K = jax.jit(source_gradients, static_argnums=0)(loss_fn, params, source_batches)
  cos_KxK = cosine_matrix(grads_K)
  norms_K = jnp.sqrt(
    sum(jnp.sum(jnp.square(g.reshape(g.shape[0], -1)), axis=1) for g in jax.tree.leaves(grads_K))
  )
  return {
    "cosine": np.asarray(cos_KxK),
    "mean_pairwise": float(_mean_off_diagonal(cos_KxK)),
    "grad_norms": np.asarray(norms_K),
  }


def make_similarity(loss_fn, val: dict, sources: list[str]):
  """params -> {"grad_cosine": K×K list, "grad_cosine/mean_pairwise", ...}:
  the sources' gradient cosines on their fixed validation batches (``val``:
  {source: {"inputs", "targets": (L, E, T)}}, ``loss_fn(params, batches)`` the
  mean over L): the first L of each, L the smallest count (a small source,
  e.g. prose, may have fewer), so every gradient sees as many tokens."""
  n = min(val[s]["inputs"].shape[0] for s in sources)
  if n < max(val[s]["inputs"].shape[0] for s in sources):
    logging.info(
      "Gradient cosines on %d validation batches per source (the smallest source's count).", n
    )
  batches = {k: np.stack([val[s][k][:n] for s in sources]) for k in ("inputs", "targets")}

  def similarity(params) -> dict:
    sim = gradient_similarity(loss_fn, params, batches)
    out = {
      "grad_cosine": np.round(sim["cosine"], 6).tolist(),
      "grad_cosine/mean_pairwise": sim["mean_pairwise"],
      "grad_cosine/sources": list(sources),
    }
    for i, a in enumerate(sources):
      for j in range(i + 1, len(sources)):
        out[f"grad_cosine/{a}-{sources[j]}"] = float(sim["cosine"][i, j])
    return out

  return similarity
