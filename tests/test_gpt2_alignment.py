"""GPT-2 weight matching on a case with a known answer: a permuted copy of a
model computes the same logits, and aligns back to distance 0 and barrier 0."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from analysis import alignment, gpt2_alignment
from models import gpt2

CONFIG = dataclasses.replace(gpt2.CONFIGS["tiny"], n_layer=2, n_head=4, d_model=32, block_size=16)


@pytest.fixture(scope="module")
def model_and_params():
  model = gpt2.GPT2(CONFIG)
  params = jax.tree.map(np.asarray, gpt2.init_params(model, jax.random.PRNGKey(0), 16))
  # Nonzero biases and LayerNorm parameters, so that every permuted leaf matters.
  leaves, treedef = jax.tree.flatten(params)
  rng = np.random.default_rng(1)
  leaves = [x + 0.05 * rng.standard_normal(x.shape).astype(x.dtype) for x in leaves]
  return model, jax.tree.unflatten(treedef, leaves)


def _tokens():
  return jax.random.randint(jax.random.PRNGKey(2), (4, 16), 0, CONFIG.vocab_size)


def _distance(a, b) -> float:
  return float(
    sum(
      np.sum((np.asarray(x) - np.asarray(y)) ** 2)
      for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
    )
    ** 0.5
  )


def test_split_merge_roundtrip(model_and_params):
  _, params = model_and_params
  back = gpt2_alignment.merge_heads(gpt2_alignment.split_heads(params, CONFIG.n_head))
  assert _distance(params, back) == 0.0


def test_permuted_copy_same_logits_and_aligns_back(model_and_params):
  model, params = model_and_params
  split = gpt2_alignment.split_heads(params, CONFIG.n_head)
  spec = gpt2_alignment.gpt2_permutation_spec(split)
  perms = gpt2_alignment.random_permutations(spec, split, seed=3)
  assert all((p != np.arange(np.shape(p)[-1])).any() for p in perms.values())
  # Every head's dimensions get their own permutation (not one per layer).
  assert all(len({tuple(r) for r in perms[k]}) > 1 for k in perms if k.endswith(("/qk", "/vo")))
  permuted = gpt2_alignment.permute_gpt2(params, perms, CONFIG.n_head)
  tokens = _tokens()
  logits = model.apply({"params": params}, tokens)
  logits_perm = model.apply({"params": permuted}, tokens)
  assert float(jnp.max(jnp.abs(logits - logits_perm))) < 1e-5
  assert _distance(params, permuted) > 1.0

  aligned, _ = gpt2_alignment.align_gpt2(params, permuted, CONFIG.n_head)
  assert _distance(params, aligned) < 1e-5
  targets = jnp.roll(tokens, -1, axis=1)
  loss = lambda p: float(gpt2.loss_fn(p, model, tokens, targets))
  ends = loss(params)
  mix = lambda t: jax.tree.map(lambda x, y: (1 - t) * x + t * y, params, aligned)
  barrier = max(loss(mix(t)) for t in (0.25, 0.5, 0.75)) - ends
  assert abs(barrier) < 1e-5


def test_per_head_refinement_never_lowers_the_matching_objective(model_and_params):
  model, params = model_and_params
  other = jax.tree.map(np.asarray, gpt2.init_params(model, jax.random.PRNGKey(7), 16))
  split_a = gpt2_alignment.split_heads(params, CONFIG.n_head)
  split_b = gpt2_alignment.split_heads(other, CONFIG.n_head)
  spec = gpt2_alignment.gpt2_permutation_spec(split_a)
  shared = alignment.weight_matching(spec, split_a, split_b)
  moved_shared = alignment.apply_permutation(spec, shared, split_b)
  aligned, _ = gpt2_alignment.align_gpt2(params, other, CONFIG.n_head)
  moved_exact = gpt2_alignment.split_heads(aligned, CONFIG.n_head)
  inner = lambda b: sum(
    float(np.vdot(x, y)) for x, y in zip(jax.tree.leaves(split_a), jax.tree.leaves(b))
  )
  assert inner(moved_exact) >= inner(moved_shared) - 1e-6
  # Still the same function: the aligned B's logits are B's.
  tokens = _tokens()
  diff = model.apply({"params": other}, tokens) - model.apply({"params": aligned}, tokens)
  assert float(jnp.max(jnp.abs(diff))) < 1e-5
