"""Scion's per-class geometry (Pethick et al., arXiv:2502.07529): which role a
leaf plays (hidden, head, embed, vector), each class's LMO, the norm whose
ball the LMO spans, and that ball as a Lion-K K ("scion_ball") for the
summaries. `optimizers.scion` builds the optimizer on these.

Layouts: a flax kernel (in, out) is the paper's W transposed; an embedding
table (V, d) used as the tied head is W as stored (`to_paper_layout`).
"""

import math
import re

import jax
import jax.numpy as jnp

from optimizers import orthogonalization as ortho
from optimizers.k_functions import KFunction, register_k
from optimizers.muon import path_names

SCION_NORMS = ("spectral", "sign", "colnorm", "bias_rms")

_HEAD = re.compile(r"(^|_)head$|^unembed|^logits$")
_EMBED = re.compile(r"embed|^wte$|^wpe$")
_TOKEN_EMBED = re.compile(r"^wte$|^embed_tokens$|^tok_embeddings$|^token_embedding$|^word_embed")

PARAMETER_ROLES = ("hidden", "head", "embed", "vector")


def parameter_roles(params, tied_head: bool | None = None):
  """The tree of roles "hidden" / "head" / "embed" / "vector" (rank < 2) by path.

  ``tied_head``: whether the token embedding (a path component "wte",
  "embed_tokens", "tok_embeddings", "token_embedding", "word_embed*") is also the
  LM head; None: when no leaf of the tree is a head (GPT-2's tied wte).
  """

  def role(path, leaf):
    if jnp.ndim(leaf) < 2:
      return "vector"
    names = [n.lower() for n in path_names(path)]
    if any(_HEAD.search(n) for n in names):
      return "head"
    if any(_EMBED.search(n) for n in names):
      return "token" if any(_TOKEN_EMBED.search(n) for n in names) else "embed"
    return "hidden"

  roles = jax.tree_util.tree_map_with_path(role, params)
  tied = "head" not in jax.tree.leaves(roles) if tied_head is None else tied_head
  return jax.tree.map(lambda r: ("head" if tied else "embed") if r == "token" else r, roles)


def is_embedding_table(path) -> bool:
  """A flax nn.Embed table ((V, d), named "embedding"), not a Dense kernel."""
  names = path_names(path)
  return bool(names) and names[-1] == "embedding"


def _t(x):
  return jnp.swapaxes(x, -1, -2)


def lmo(x_OxI, norm: str, orth=ortho.polar_svd, spectral_max: bool = False, eps: float = 1e-8):
  """The class lmo of a (stack of) (out, in) matrices (or a vector for "bias_rms"),
  with the sign convention of the code: W moves along −lmo(d)."""
  if norm == "bias_rms":
    rms = (
      jnp.sqrt(jnp.mean(jnp.square(x_OxI), axis=-1, keepdims=True))
      if x_OxI.ndim
      else jnp.abs(x_OxI)
    )
    return x_OxI / (rms + eps)
  out_dim, in_dim = x_OxI.shape[-2:]
  if norm == "spectral":
    scale = math.sqrt(out_dim / in_dim)
    return orth(x_OxI) * (max(1.0, scale) if spectral_max else scale)
  if norm == "sign":
    return jnp.sign(x_OxI) / in_dim
  if norm == "colnorm":
    return x_OxI / (jnp.sqrt(jnp.mean(jnp.square(x_OxI), axis=-2, keepdims=True)) + eps)
  raise ValueError(f"Unknown Scion norm {norm!r}; known: {SCION_NORMS}.")


def ball_norm(x_OxI, norm: str, spectral_max: bool = False):
  """The norm whose unit ball the class's lmo spans (‖lmo(d)‖ = 1): the SCG ball is
  ball_norm(W) ≤ ρ. Per matrix the max over leading (stacked) axes."""
  x_OxI = x_OxI.astype(jnp.float32)
  if norm == "bias_rms":
    return jnp.max(jnp.sqrt(jnp.mean(jnp.square(x_OxI), axis=-1))) if x_OxI.ndim else jnp.abs(x_OxI)
  out_dim, in_dim = x_OxI.shape[-2:]
  if norm == "spectral":
    scale = math.sqrt(out_dim / in_dim)
    scale = max(1.0, scale) if spectral_max else scale
    return jnp.max(jnp.linalg.svd(x_OxI, compute_uv=False)) / scale
  if norm == "sign":
    return jnp.max(jnp.abs(x_OxI)) * in_dim
  if norm == "colnorm":
    return jnp.max(jnp.sqrt(jnp.mean(jnp.square(x_OxI), axis=-2)))
  raise ValueError(f"Unknown Scion norm {norm!r}; known: {SCION_NORMS}.")


def to_paper_layout(path, leaf, cls: str) -> bool:
  """Whether the leaf must be transposed to be the paper's W (module docstring):
  every matrix but an embedding table in the head class (the tied head)."""
  return jnp.ndim(leaf) >= 2 and not (cls == "head" and is_embedding_table(path))


@register_k("scion_ball")
def _scion_ball(norm: str = "spectral", transpose: bool = True, spectral_max: bool = False):
  """K whose dual norm is Scion's class norm (`ball_norm`), for the summaries'
  λ·K*(θ) ≤ 1 with λ = 1/ρ: ∇K = the class lmo, K(d) = ⟨d, lmo(d)⟩. ``transpose``:
  the leaf is a flax kernel (in, out), the paper's W transposed (`to_paper_layout`)."""
  if norm not in SCION_NORMS:
    raise ValueError(f"Unknown Scion norm {norm!r}; known: {SCION_NORMS}.")
  paper = lambda x: _t(x) if transpose and jnp.ndim(x) >= 2 else x
  grad = lambda x: paper(lmo(paper(x.astype(jnp.float32)), norm, spectral_max=spectral_max))
  return KFunction(
    "scion_ball",
    lambda x: jnp.sum(x.astype(jnp.float32) * grad(x)),
    grad,
    lambda x: ball_norm(paper(x), norm, spectral_max),
  )
