"""train.py feeding Nexus on GPT-2: it trains, resumes bitwise (per-source
iterator and Nexus's RNG included), logs the sources' gradient-cosine matrix,
and with one source and one inner step is AdamW on normalized gradients."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from absl import logging

import training
from configs.gpt2 import get_config
from data import text_pipeline, tokenizers
from models import gpt2
from optimizers import factory
from optimizers.nexus import normalize_gradient
from tests.config_overrides import assert_params_close, config_with, unsafe_config_with
from training import finite, gpt2_steps, similarity, tasks
from training import workdir as wd

logging.set_verbosity(logging.WARNING)


def _config(variant="runlocal,nexus", **fields):
  return config_with(get_config, variant, **fields)


pytestmark = pytest.mark.usefixtures("compilation_cache")  # tests/conftest.py


def _rows(workdir, key):
  return [r for r in wd.read_metrics(workdir) if key in r]


def _leaves(params):
  return [np.asarray(x) for x in jax.tree.leaves(params)]


def test_nexus_trains_logs_similarity_and_resumes_bitwise(tmp_path):
  common = dict(
    checkpoint_every=10, log_every=5, similarity_every=10, optimizer__schedule="constant"
  )
  full = training.run(_config("runlocal,nexus,steps=20", **common), tmp_path / "full")
  assert full["nexus"] and full["tokens_per_step"] == 9 * 32
  losses = [r["train_loss"] for r in _rows(tmp_path / "full", "train_loss")]
  assert losses[-1] < losses[0] - 0.3, losses
  # The K×K gradient-cosine matrix of prose, code, math, every 10 steps.
  sims = _rows(tmp_path / "full", "grad_cosine")
  assert [r["step"] for r in sims] == [10, 20]
  for r in sims:
    cos = np.asarray(r["grad_cosine"])
    assert cos.shape == (3, 3) and r["grad_cosine/sources"] == ["prose", "code", "math"]
    np.testing.assert_allclose(cos, cos.T, atol=1e-6)
    np.testing.assert_allclose(np.diag(cos), 1.0, atol=1e-5)
    assert r["grad_cosine/mean_pairwise"] == pytest.approx(
      cos[np.triu_indices(3, 1)].mean(), abs=1e-5
    )
  assert np.asarray(full["final_grad_cosine"]).shape == (3, 3)

  # Stop at step 10 (checkpoint: params, Nexus state, per-source iterator), go on.
  training.run(_config("runlocal,nexus,steps=10", **common), tmp_path / "split")
  resumed = training.run(
    _config("runlocal,nexus,steps=20", **common), tmp_path / "split", override_config=True
  )
  assert resumed["resumed_from_step"] == 10
  assert_params_close(tmp_path / "full", tmp_path / "split", rtol=0, atol=0)  # Bitwise.
  assert full["final_val_loss"] == resumed["final_val_loss"]
  for key in ("train_loss", "update_norm", "grad_cosine"):
    assert [(r["step"], r[key]) for r in _rows(tmp_path / "full", key)] == [
      (r["step"], r[key]) for r in _rows(tmp_path / "split", key)
    ], key


@pytest.mark.slow  # ~21 s; tests/test_nexus.py checks the same identity on the optimizer
def test_one_source_one_inner_step_is_adamw_on_normalized_gradients():
  # γ drops out with k = 1, (θ − (θ − γd))/γ = d, but float32 rounds θ − γd to
  # θ's precision: a large γ keeps that rounding far below Adam's sensitivity.
  config = _config(
    "runlocal,nexus,sources=prose",
    optimizer__nexus__inner_steps=1,
    optimizer__nexus__inner_learning_rate=10.0,
    optimizer__schedule="constant",
    optimizer__grad_clip_norm=0.0,
  )
  tok = tokenizers.get_tokenizer("bytes")
  model = tasks.gpt2_model(config, tok.vocab_size)
  mesh = gpt2_steps.make_data_mesh()
  tx = factory.make_optimizer(config.optimizer, config.num_steps, num_sources=1)
  ref_config = ml_collections.ConfigDict(config.optimizer.to_dict())
  ref_config.nexus.enabled = False
  ref_tx = optax.chain(
    optax.stateless(lambda g, p: normalize_gradient(g)),
    factory.make_optimizer(ref_config, config.num_steps),
  )
  nexus_step, _, nexus_sharding = gpt2_steps.make_steps(model, tx, mesh, 1, num_sources=1)
  ref_step, _, ref_sharding = gpt2_steps.make_steps(model, ref_tx, mesh, 1)

  params = gpt2.init_params(model, jax.random.PRNGKey(0), config.data.seq_len)
  start = _leaves(params)
  init = lambda t: {
    "step": jnp.int32(0),
    "params": jax.tree.map(jnp.copy, params),
    "opt_state": t.init(params),
    "rng": jax.random.PRNGKey(1),
    "first_nonfinite_step": jnp.int32(-1),
  }
  a, b = init(tx), init(ref_tx)
  ra, rb = finite.empty_record(params), finite.empty_record(params)
  windows = text_pipeline.build_text_windows(
    ["prose"], "train", tok, config.data.seq_len, max_chars=config.data.max_chars
  )
  it = iter(text_pipeline.per_source_loader(windows, batch_size=4, seed=0))
  for _ in range(5):
    batch = next(it)
    a, ra, _ = nexus_step(a, ra, *gpt2_steps.to_device_batch(batch, 1, nexus_sharding, ["prose"]))
    b, rb, _ = ref_step(b, rb, *gpt2_steps.to_device_batch(batch["prose"], 1, ref_sharding))
  moved = [np.abs(x - y).max() for x, y in zip(_leaves(a["params"]), start)]
  assert max(moved) > 1e-3  # The comparison is not vacuous.
  # Nexus hands AdamW (θ − (θ − γd))/γ = d up to float32 rounding.
  for x, y in zip(_leaves(a["params"]), _leaves(b["params"])):
    np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)


@pytest.mark.slow  # ~18 s: `pytest -m slow`
def test_nexus_grad_accumulation_matches_one_batch(tmp_path):
  common = dict(
    log_every=1, eval_every=3, checkpoint_every=3, optimizer__nexus__source_order="cyclic"
  )
  one = training.run(_config("runlocal,nexus,steps=3,batch=12", **common), tmp_path / "one")
  acc = training.run(_config("runlocal,nexus,steps=3,batch=12,accum=2", **common), tmp_path / "acc")
  assert_params_close(tmp_path / "one", tmp_path / "acc", rtol=1e-4, atol=1e-5)
  assert one["final_val_loss"]["mean"] == pytest.approx(acc["final_val_loss"]["mean"], abs=1e-4)


@pytest.mark.parametrize(
  "fields,expected",
  [
    (dict(batch_size=8), "pick a multiple of 3"),
    (dict(batch_size=6, grad_accum_steps=3), "pick a multiple of 9"),
    (dict(data__weights="1+1+2"), "leave data.weights empty"),
    (dict(optimizer__nexus__inner_steps=0), "inner_steps=0 is impossible"),
    (dict(optimizer__nexus__normalize="l3"), "normalize='l3' is impossible"),
    (dict(optimizer__nexus__control="shuffle"), "control='shuffle' is impossible"),
  ],
)
def test_bad_nexus_config_fails_before_training(tmp_path, fields, expected):
  config = unsafe_config_with(_config(), **fields)
  with pytest.raises(training.ConfigError) as info:
    training.run(config, tmp_path / "run")
  assert expected in str(info.value) and "\n" not in str(info.value)
  assert not (tmp_path / "run").exists()


def test_similarity_uses_the_same_number_of_batches_per_source():
  # prose has fewer validation windows than eval_batches asks for: the cosines
  # use the first N batches of every source, N the smallest count.
  model = gpt2.GPT2(gpt2.CONFIGS["tiny"])
  params = gpt2.init_params(model, jax.random.PRNGKey(0), 16)
  rng = np.random.default_rng(0)
  val = {
    s: {k: rng.integers(0, 256, (n, 2, 16)).astype(np.int32) for k in ("inputs", "targets")}
    for s, n in (("prose", 2), ("code", 3), ("math", 4))
  }
  out = similarity.make_similarity(tasks.stacked_loss(model), val, ["prose", "code", "math"])(
    params
  )
  first2 = {s: {k: v[:2] for k, v in b.items()} for s, b in val.items()}
  same = similarity.make_similarity(tasks.stacked_loss(model), first2, ["prose", "code", "math"])(
    params
  )
  np.testing.assert_allclose(out["grad_cosine"], same["grad_cosine"], atol=1e-6)
  assert np.asarray(out["grad_cosine"]).shape == (3, 3)
