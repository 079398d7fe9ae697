"""Scion: a NumPy float64 transcription of the authors' step per class, the SCG
ball fact (exact SVD, ‖W₀‖ ≤ ρ: every iterate stays in the ball), the class
routing of GPT-2 trees, the config interface, and jit / inject_hyperparams /
MultiSteps / vmap over seeds / bf16."""

import inspect
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from models.gpt2 import GPT2, GPT2Config, init_params
from optimizers.scion import (
  DOMAINS,
  parameter_roles,
  resolve_classes,
  scion,
  scion_ball_norms,
  scion_labels,
)

# Runs of one shape share compiled steps (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("compilation_cache")

# f32 against float64 over 4 steps: rounding only (measured ≤ 2e-7 on O(0.1) weights).
ATOL = 2e-6
QUINTIC = (3.4445, -4.7750, 2.0315)
V, D, T = 24, 8, 6


def _normal(rng, shape, dtype=jnp.float32):
  rng = np.random.default_rng(rng) if isinstance(rng, int) else rng
  return jnp.asarray(rng.normal(size=shape), dtype)


def reference_msign(x, exact):
  """msign by the SVD, or Jordan's zeropower_via_newtonschulz5 (5 quintic steps,
  short side first, Frobenius normalization + 1e−7), in float64."""
  if exact:
    u, _, vt = np.linalg.svd(x, full_matrices=False)
    return u @ vt
  tall = x.shape[0] > x.shape[1]
  y = x.T if tall else x
  y = y / (np.linalg.norm(y) + 1e-7)
  a, b, c = QUINTIC
  for _ in range(5):
    gram = y @ y.T
    y = a * y + (b * gram + c * gram @ gram) @ y
  return y.T if tall else y


def reference_lmo(x, norm, exact, eps=1e-8):
  """The authors' Spectral / Sign / ColNorm / BiasRMS lmo of an (out, in) matrix
  (a vector for bias_rms), in float64."""
  if norm == "bias_rms":
    return x / (np.sqrt(np.mean(x**2)) + eps)
  out_dim, in_dim = x.shape
  if norm == "spectral":
    return math.sqrt(out_dim / in_dim) * reference_msign(x, exact)
  if norm == "sign":
    return np.sign(x) / in_dim
  return x / (np.sqrt(np.mean(x**2, axis=0, keepdims=True)) + eps)  # colnorm


def reference_scion_step(w, g, d, lr, alpha, radius, norm, constrained, exact):
  """Scion.step for one parameter: d ← (1 − α)d + αg, u = ρ·lmo(d),
  W ← (1 − γ)W − γu (SCG) or W − γu (uSCG). Returns (W, d)."""
  d = (1 - alpha) * d + alpha * g
  u = radius * reference_lmo(d, norm, exact)
  return ((1 - lr) * w if constrained else w) - lr * u, d


def reference_ball_norm(w, norm):
  if norm == "bias_rms":
    return np.sqrt(np.mean(w**2))
  out_dim, in_dim = w.shape
  if norm == "spectral":
    return np.linalg.norm(w, 2) / math.sqrt(out_dim / in_dim)
  if norm == "sign":
    return np.abs(w).max() * in_dim
  return np.sqrt(np.mean(w**2, axis=0)).max()


def _tree(untied: bool, seed=0):
  """wte, wpe, one MLP block and a LayerNorm, and an untied head kernel or none."""
  rng = np.random.default_rng(seed)
  tree = {
    "wte": {"embedding": 0.1 * _normal(rng, (V, D))},
    "wpe": {"embedding": 0.1 * _normal(rng, (T, D))},
    "h_0": {
      "mlp": {"c_fc": {"kernel": 0.1 * _normal(rng, (D, 3 * D)), "bias": jnp.zeros(3 * D)}},
      "ln_1": {"scale": jnp.ones(D)},
    },
  }
  if untied:
    tree["lm_head"] = {"kernel": 0.01 * _normal(rng, (D, V))}
  return tree


# Per leaf name: (class, how the paper's (out, in) W is read from the leaf).
# Kernels and input tables are (in, out): W = leafᵀ; the tied head table is W.
LAYOUT = {
  "wpe/embedding": ("embed", "T"),
  "h_0/mlp/c_fc/kernel": ("hidden", "T"),
  "h_0/mlp/c_fc/bias": ("bias", "vector"),
  "h_0/ln_1/scale": ("bias", "vector"),
  "lm_head/kernel": ("head", "T"),
}
NORMS = {"hidden": "spectral", "head": "sign", "embed": "colnorm", "bias": "bias_rms"}
RADII = {"hidden": 3.0, "head": 10.0, "embed": 1.0, "bias": 1.0}


def _expected_layout(untied: bool):
  layout = {k: v for k, v in LAYOUT.items() if untied or k != "lm_head/kernel"}
  # Untied, the token table is an input layer; tied, it is the head, W as stored.
  layout["wte/embedding"] = ("embed", "T") if untied else ("head", "as_is")
  return layout


def _small_tree(seed=0):
  """A tied table (the head), a position table, a kernel and a bias: every class once."""
  rng = np.random.default_rng(seed)
  return {
    "wte": {"embedding": 0.1 * _normal(rng, (V, D))},
    "wpe": {"embedding": 0.1 * _normal(rng, (T, D))},
    "h_0": {"kernel": 0.1 * _normal(rng, (D, 2 * D)), "bias": jnp.zeros(2 * D)},
  }


def _flat(tree):
  return {
    jax.tree_util.keystr(p, simple=True, separator="/"): np.asarray(x, np.float64)
    for p, x in jax.tree_util.tree_leaves_with_path(tree)
  }


def _paper(x, how):
  return x.T if how == "T" else x


@pytest.mark.parametrize(
  "untied,method,constrained",
  [(True, "newton_schulz", True), (False, "svd", True), (False, "newton_schulz", False)],
)
def test_matches_numpy_reference(untied, method, constrained):
  lr, alpha = 0.05, 0.1
  params = _tree(untied)
  rng = np.random.default_rng(1)
  grads = [jax.tree.map(lambda p: _normal(rng, p.shape), params) for _ in range(4)]
  opt = scion(lr, momentum=alpha, constrained=constrained, method=method)
  state, update = opt.init(params), jax.jit(opt.update)
  layout = _expected_layout(untied)
  ref_w = {k: _paper(v, layout[k][1]) for k, v in _flat(params).items()}
  ref_d = {k: np.zeros_like(v) for k, v in ref_w.items()}
  worst = 0.0
  for g in grads:
    u, state = update(g, state, params)
    params = optax.apply_updates(params, u)
    for name, gv in _flat(g).items():
      cls, how = layout[name]
      ref_w[name], ref_d[name] = reference_scion_step(
        ref_w[name], _paper(gv, how), ref_d[name], lr, alpha, RADII[cls], NORMS[cls],
        constrained, method == "svd",
      )  # fmt: skip
    got = _flat(params)
    worst = max(worst, max(np.abs(_paper(got[k], layout[k][1]) - ref_w[k]).max() for k in got))
  print(f"max |Δ| vs NumPy: {worst:.2e}")  # Shown with pytest -s.
  assert worst < ATOL, worst


def test_iterates_stay_in_the_ball_with_exact_svd():
  """SCG with the exact msign, γ ≤ 1 and W₀ inside the radius-ρ ball of each class:
  every iterate stays inside; uSCG with the same steps leaves it."""
  params, radii = (
    _tree(untied=True, seed=3),
    {"hidden": 0.5, "head": 2.0, "embed": 0.3, "bias": 0.4},
  )
  layout = _expected_layout(True)

  def into_ball(name, x):  # Rescale W₀ to 0.9·ρ in its class norm.
    cls, how = layout[name]
    norm = reference_ball_norm(_paper(np.asarray(x, np.float64), how), NORMS[cls])
    return x * (0.9 * radii[cls] / norm) if norm > 0 else x

  params = jax.tree_util.tree_map_with_path(
    lambda p, x: into_ball(jax.tree_util.keystr(p, simple=True, separator="/"), x), params
  )
  rng = np.random.default_rng(4)
  for constrained in (True, False):
    opt = scion(0.3, momentum=0.5, constrained=constrained, method="svd", radii=radii)
    state, update, p = opt.init(params), jax.jit(opt.update), params
    worst = 0.0
    for _ in range(12):
      g = jax.tree.map(lambda x: _normal(rng, x.shape), p)
      u, state = update(g, state, p)
      p = optax.apply_updates(p, u)
      for name, x in _flat(p).items():
        cls, how = layout[name]
        assert np.all(np.isfinite(x)), name
        worst = max(worst, reference_ball_norm(_paper(x, how), NORMS[cls]) / radii[cls])
    if constrained:
      assert worst <= 1 + 1e-5, worst
    else:
      assert worst > 1.5, worst
  # scion_ball_norms reads the same norms from the section's hyperparameters.
  got = _flat(scion_ball_norms(p, radii=radii))
  for name, x in _flat(p).items():
    cls, how = layout[name]
    np.testing.assert_allclose(
      got[name], reference_ball_norm(_paper(x, how), NORMS[cls]), rtol=1e-5
    )


def gpt2_params(seed=0):
  """A small GPT-2 tree of models.gpt2 (names and shapes by eval_shape)."""
  config = GPT2Config(vocab_size=32, block_size=8, n_layer=2, n_head=2, d_model=8)
  shapes = jax.eval_shape(lambda: init_params(GPT2(config), jax.random.PRNGKey(0)))
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: jnp.asarray(0.02 * rng.normal(size=s.shape), s.dtype), shapes)


def _names(labels):
  return {
    jax.tree_util.keystr(p, simple=True, separator="/"): v
    for p, v in jax.tree_util.tree_leaves_with_path(labels)
  }


def test_gpt2_classes_tied_untied_and_overrides():
  params = gpt2_params()
  names = _names(scion_labels(params))
  kernels = [
    f"h_{i}/{m}/kernel"
    for i in range(2)
    for m in ("attn/c_attn", "attn/c_proj", "mlp/c_fc", "mlp/c_proj")
  ]
  assert sorted(k for k, v in names.items() if v == "hidden") == sorted(kernels)
  assert names["wte/embedding"] == "head"  # Tied: the token table is the LM head.
  assert names["wpe/embedding"] == "embed"
  assert {v for k, v in names.items() if not k.endswith("kernel") and "embedding" not in k} == {
    "bias"
  }
  assert _names(scion_labels(params, tied_head=False))["wte/embedding"] == "embed"
  assert set(_names(scion_labels(params, vectors="adam")).values()) == {
    "hidden",
    "head",
    "embed",
    "adam",
  }
  # With a separate head the token table is an embedding.
  untied = {**params, "lm_head": {"kernel": jnp.zeros((8, 32))}}
  roles = _names(parameter_roles(untied))
  assert roles["wte/embedding"] == "embed" and roles["lm_head/kernel"] == "head"
  everything_hidden = lambda path, leaf: "hidden" if leaf.ndim >= 2 else "adam"
  assert set(_names(scion_labels(params, routing=everything_hidden)).values()) == {"hidden", "adam"}
  # A vector routed to AdamW gets optax.adamw's step (and the section's decay).
  opt = scion(0.01, vectors="adam", weight_decay=0.1)
  grads = jax.tree.map(lambda p: jnp.full_like(p, 0.1), params)
  u, _ = jax.jit(opt.update)(grads, opt.init(params), params)
  adamw = optax.adamw(0.01, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.1)
  want, _ = jax.jit(adamw.update)(grads, adamw.init(params), params)
  np.testing.assert_allclose(u["ln_f"]["scale"], want["ln_f"]["scale"], rtol=1e-6)


def test_config_interface_flat_keywords_and_dicts():
  radius, norm = resolve_classes(radius_hidden=5.0, norm_embed="sign")
  assert radius == {"hidden": 5.0, "head": 10.0, "embed": 1.0, "bias": 1.0}
  assert norm["embed"] == "sign" and norm["hidden"] == "spectral"
  assert resolve_classes({"head": 7.0}, None, radius_hidden=2.0)[0]["head"] == 7.0
  with pytest.raises(ValueError, match="given twice"):
    resolve_classes({"hidden": 1.0}, None, radius_hidden=2.0)
  with pytest.raises(ValueError, match="Unknown Scion class"):
    scion(0.1, radii={"output": 1.0})
  with pytest.raises(ValueError, match="Unknown Scion norm"):
    scion(0.1, norm_head="frobenius")
  with pytest.raises(ValueError, match="must be > 0"):
    scion(0.1, radius_bias=-1.0)
  params = _tree(untied=True)
  grads = jax.tree.map(jnp.ones_like, params)
  flat = scion(0.1, radius_hidden=2.0, norm_bias="bias_rms", method="svd")
  as_dict = scion(0.1, radii={"hidden": 2.0}, norms={"bias": "bias_rms"}, method="svd")
  a = flat.update(grads, flat.init(params), params)[0]
  b = as_dict.update(grads, as_dict.init(params), params)[0]
  jax.tree.map(np.testing.assert_array_equal, a, b)
  keywords = set(inspect.signature(scion).parameters) - {"learning_rate", "weight_decay", "mask"}
  assert keywords == set(DOMAINS)
  assert DOMAINS["radius_head"].check(None) and not DOMAINS["radius_head"].check(-1.0)
  assert DOMAINS["norms"].check({"head": "sign"}) and not DOMAINS["norms"].check({"head": "l1"})
  assert DOMAINS["momentum"].check(1.0) and not DOMAINS["momentum"].check(0.0)


def _run(opt, params, grads_seq):
  state, update = opt.init(params), jax.jit(opt.update)
  for g in grads_seq:
    u, state = update(g, state, params)
    params = optax.apply_updates(params, u)
  return params


def _grads(params, n, seed=11):
  rng = np.random.default_rng(seed)
  return [jax.tree.map(lambda p: _normal(rng, p.shape, p.dtype), params) for _ in range(n)]


@pytest.mark.slow  # the wrapper checks: `pytest -m slow`
def test_inject_hyperparams_schedule_and_multisteps():
  params = _small_tree()
  grads = _grads(params, 3)
  sched = optax.linear_schedule(0.1, 0.02, 3)
  injected = optax.inject_hyperparams(scion, static_args=("ns_steps",))(
    learning_rate=sched, radius_hidden=2.0, momentum=0.3
  )
  want = _run(scion(sched, radius_hidden=2.0, momentum=0.3), params, grads)
  got = _run(injected, params, grads)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), got, want)
  multi = _run(optax.MultiSteps(scion(0.1), 2), params, grads[:2])
  one = _run(scion(0.1), params, [jax.tree.map(lambda a, b: (a + b) / 2, grads[0], grads[1])])
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), multi, one)


def test_vmap_over_seeds_matches_each_seed():
  seeds = [_small_tree(seed=s) for s in range(3)]
  params_S = jax.tree.map(lambda *x: jnp.stack(x), *seeds)
  grads = [_grads(p, 2, seed=30 + i) for i, p in enumerate(seeds)]
  grads_S = [jax.tree.map(lambda *x: jnp.stack(x), *(g[t] for g in grads)) for t in range(2)]
  opt = scion(0.1)
  state, update = jax.vmap(opt.init)(params_S), jax.jit(jax.vmap(opt.update))
  p_S = params_S
  for g in grads_S:
    u, state = update(g, state, p_S)
    p_S = optax.apply_updates(p_S, u)
  for i in range(3):
    want = _run(opt, seeds[i], grads[i])
    jax.tree.map(lambda a, b, i=i: np.testing.assert_allclose(a[i], b, atol=1e-6), p_S, want)


@pytest.mark.slow  # the wrapper checks: `pytest -m slow`
def test_bf16_params():
  params = _small_tree()
  grads = _grads(params, 2)
  to16 = lambda t: jax.tree.map(lambda x: x.astype(jnp.bfloat16), t)
  out16 = _run(scion(0.1), to16(params), [to16(g) for g in grads])
  out32 = _run(scion(0.1), params, grads)
  assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(out16))
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(np.asarray(a, np.float32), b, atol=0.03), out16, out32
  )
