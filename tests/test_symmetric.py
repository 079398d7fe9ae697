"""Symmetry-compatible updates (Lau & Su): a NumPy float64 transcription of the
authors' rules per class, the sheet's facts (row-norm and polar equivariance,
centered shift invariance), the registered K functions against autodiff and
their duals, GPT-2 routing, and jit / inject_hyperparams / MultiSteps / vmap
over seeds / bf16."""

import inspect
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from models.gpt2 import GPT2, GPT2Config, init_params
from optimizers.symmetric import (
  DOMAINS,
  symmetric_labels,
  symmetric_stack,
)

# Runs of one shape share compiled steps (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("compilation_cache")

# f32 against float64 over 4 steps: rounding only (measured ≤ 2e-7 on O(0.1) weights).
ATOL = 2e-6
QUINTIC = (3.4445, -4.7750, 2.0315)
V, D, T = 20, 6, 5


def _normal(rng, shape, dtype=jnp.float32):
  rng = np.random.default_rng(rng) if isinstance(rng, int) else rng
  return jnp.asarray(rng.normal(size=shape), dtype)


def _orthogonal(rng, n):
  q, r = np.linalg.qr(np.random.default_rng(rng).normal(size=(n, n)))
  return q * np.sign(np.diag(r))


# ----- NumPy float64 transcriptions (optim/rownorm.py, rightpolargrad.py,
# leftpolargrad.py, hybrid.py "row_then_polar", KellerJordan/Muon) -----


def ref_rownorm(m, eps=1e-8):
  return m / (np.linalg.norm(m, axis=-1, keepdims=True) + eps)


def ref_center(m):
  return m - m.mean(axis=0, keepdims=True)


def ref_polar(m):
  u, _, vt = np.linalg.svd(m, full_matrices=False)
  return u @ vt


def ref_newton_schulz(x):
  """Jordan's zeropower_via_newtonschulz5: 5 quintic steps on the short side."""
  tall = x.shape[0] > x.shape[1]
  y = x.T if tall else x
  y = y / (np.linalg.norm(y) + 1e-7)
  a, b, c = QUINTIC
  for _ in range(5):
    gram = y @ y.T
    y = a * y + (b * gram + c * gram @ gram) @ y
  return y.T if tall else y


def ref_nu_polar(m, polar=ref_polar):
  """ν·polar(m), ν = ⟨m, polar(m)⟩ (= ‖m‖_* when exact): the right (and left) rule."""
  p = polar(m)
  return np.sum(m * p) * p


def ref_hybrid(m, eps=1e-8, polar=ref_polar):
  """hybrid.py, order "row_then_polar", alpha 1: X = rownorm(m), ν·polar(X)."""
  return ref_nu_polar(ref_rownorm(m, eps), polar)


def ref_rule(rule, m, exact):
  polar = ref_polar if exact else ref_newton_schulz
  if rule == "rownorm":
    return ref_rownorm(m)
  if rule == "hybrid":
    return ref_hybrid(m, polar=polar)
  return ref_nu_polar(m, polar)  # right_spectral


def _tree(untied: bool, seed=0):
  rng = np.random.default_rng(seed)
  tree = {
    "wte": {"embedding": 0.1 * _normal(rng, (V, D))},
    "wpe": {"embedding": 0.1 * _normal(rng, (T, D))},
    "h_0": {
      "attn": {"c_attn": {"kernel": 0.1 * _normal(rng, (D, 3 * D)), "bias": jnp.zeros(3 * D)}},
      "mlp": {"c_proj": {"kernel": 0.1 * _normal(rng, (3 * D, D))}},
      "ln_1": {"scale": jnp.ones(D)},
    },
  }
  if untied:
    tree["lm_head"] = {"kernel": 0.01 * _normal(rng, (D, V))}
  return tree


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


def _classes(untied):
  """Per leaf: its class and whether the rows-first view is the leaf's transpose."""
  out = {
    "wpe/embedding": ("embed", False),
    "h_0/attn/c_attn/kernel": ("matrices", True),
    "h_0/mlp/c_proj/kernel": ("matrices", True),
    "h_0/attn/c_attn/bias": ("adam", False),
    "h_0/ln_1/scale": ("adam", False),
    "wte/embedding": ("embed", False) if untied else ("head", False),
  }
  return out | ({"lm_head/kernel": ("head", True)} if untied else {})


def reference_step(w, g, m, rule, transpose, lr, beta, wd, exact):
  """One step of one non-AdamW leaf (flax layout in and out): EMA momentum, the
  rule on the rows-first view (or Muon), decoupled decay."""
  m = beta * m + (1 - beta) * g
  if rule == "muon":  # Nesterov lerp, polar, √max(1, fan_out/fan_in).
    x = (1 - beta) * g + beta * m
    o = ref_polar(x) if exact else ref_newton_schulz(x)
    u = o * math.sqrt(max(1, w.shape[1] / w.shape[0]))
  else:
    u = ref_rule(rule, m.T if transpose else m, exact)
    u = u.T if transpose else u
  return w - lr * (u + wd * w), m


@pytest.mark.parametrize(
  "untied,embed,head,method",
  [(False, "right_spectral", "hybrid", "svd"), (True, "rownorm", "hybrid", "newton_schulz")],
)
def test_matches_numpy_reference(untied, embed, head, method):
  lr, beta, wd = 0.02, 0.9, 0.1
  rules = {"embed": embed, "head": head, "matrices": "muon"}
  params = _tree(untied)
  rng = np.random.default_rng(2)
  grads = [jax.tree.map(lambda p: _normal(rng, p.shape), params) for _ in range(4)]
  opt = symmetric_stack(
    lr, embed=embed, head=head, beta=beta, weight_decay=wd, method=method, ns_coeffs="quintic"
  )
  state, update = opt.init(params), jax.jit(opt.update)
  adamw = optax.adamw(lr, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.0)
  adam_state, adam_update, adam_params = adamw.init(params), jax.jit(adamw.update), params
  classes = _classes(untied)
  ref_w = _flat(params)
  ref_m = {k: np.zeros_like(v) for k, v in ref_w.items()}
  worst = 0.0
  for g in grads:
    u, state = update(g, state, params)
    params = optax.apply_updates(params, u)
    a, adam_state = adam_update(g, adam_state, adam_params)
    adam_params = optax.apply_updates(adam_params, a)
    for name, gv in _flat(g).items():
      cls, transpose = classes[name]
      if cls != "adam":
        ref_w[name], ref_m[name] = reference_step(
          ref_w[name], gv, ref_m[name], rules[cls], transpose, lr, beta, wd, method == "svd"
        )
    got, adam_got = _flat(params), _flat(adam_params)
    for name, (cls, _) in classes.items():
      want = adam_got[name] if cls == "adam" else ref_w[name]
      worst = max(worst, float(np.abs(got[name] - want).max()))
  print(f"max |Δ| vs NumPy: {worst:.2e}")  # Shown with pytest -s.
  assert worst < ATOL, worst


# ----- The sheet's facts -----


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


def test_gpt2_routing_as_documented():
  params = gpt2_params()
  names = _names(symmetric_labels(params))
  kernels = [
    f"h_{i}/{m}/kernel"
    for i in range(2)
    for m in ("attn/c_attn", "attn/c_proj", "mlp/c_fc", "mlp/c_proj")
  ]
  assert sorted(k for k, v in names.items() if v == "matrices") == sorted(kernels)
  assert names["wte/embedding"] == "head"  # Tied: hybrid, as the authors' tied lm_head.
  assert names["wpe/embedding"] == "embed"
  vectors = {v for k, v in names.items() if not k.endswith(("kernel", "embedding"))}
  assert vectors == {"adam"}
  untied = _names(symmetric_labels({**params, "lm_head": {"kernel": jnp.zeros((8, 32))}}))
  assert untied["wte/embedding"] == "embed" and untied["lm_head/kernel"] == "head"
  assert _names(symmetric_labels(params, embed="adamw"))["wpe/embedding"] == "adam"
  assert _names(symmetric_labels(params, tied_head=False))["wte/embedding"] == "embed"
  custom = lambda path, leaf: "matrices" if leaf.ndim >= 2 else "adam"
  assert set(_names(symmetric_labels(params, routing=custom)).values()) == {"matrices", "adam"}
  opt = symmetric_stack(0.01)
  grads = jax.tree.map(lambda p: jnp.full_like(p, 0.1), params)
  u, _ = jax.jit(opt.update)(grads, opt.init(params), params)
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(u))


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
  sched = optax.linear_schedule(0.02, 0.005, 3)
  injected = optax.inject_hyperparams(symmetric_stack, static_args=("ns_steps",))(
    learning_rate=sched,
    embed="centered_rownorm",
    beta=0.8,
    weight_decay=0.1,
    head_learning_rate=0.01,
  )
  want = symmetric_stack(
    sched, embed="centered_rownorm", beta=0.8, weight_decay=0.1, head_learning_rate=0.01
  )
  want = _run(want, params, grads)
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), _run(injected, params, grads), want
  )
  multi = _run(optax.MultiSteps(symmetric_stack(0.02), 2), params, grads[:2])
  one = _run(symmetric_stack(0.02), params, [jax.tree.map(lambda a, b: (a + b) / 2, *grads[:2])])
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), multi, one)


def test_vmap_over_seeds_matches_each_seed():
  seeds = [_small_tree(seed=s) for s in range(3)]
  params_S = jax.tree.map(lambda *x: jnp.stack(x), *seeds)
  grads = [_grads(p, 2, seed=40 + i) for i, p in enumerate(seeds)]
  grads_S = [jax.tree.map(lambda *x: jnp.stack(x), *(g[t] for g in grads)) for t in range(2)]
  opt = symmetric_stack(0.02, weight_decay=0.1)
  state, update = jax.vmap(opt.init)(params_S), jax.jit(jax.vmap(opt.update))
  p_S = params_S
  for g in grads_S:
    u, state = update(g, state, p_S)
    p_S = optax.apply_updates(p_S, u)
  for i in range(3):
    want = _run(opt, seeds[i], grads[i])
    jax.tree.map(lambda a, b, i=i: np.testing.assert_allclose(a[i], b, atol=1e-6), p_S, want)


@pytest.mark.slow  # the wrapper checks: `pytest -m slow`
def test_bf16_params_and_domains():
  params = _small_tree()
  grads = _grads(params, 2)
  to16 = lambda t: jax.tree.map(lambda x: x.astype(jnp.bfloat16), t)
  out16 = _run(symmetric_stack(0.02), to16(params), [to16(g) for g in grads])
  out32 = _run(symmetric_stack(0.02), params, grads)
  assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(out16))
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(np.asarray(a, np.float32), b, atol=0.03), out16, out32
  )
  keywords = set(inspect.signature(symmetric_stack).parameters)
  assert keywords - {"learning_rate", "weight_decay", "mask"} == set(DOMAINS)
  assert DOMAINS["head"].check("hybrid") and not DOMAINS["head"].check("polar")
  with pytest.raises(ValueError, match="Unknown rule"):
    symmetric_stack(0.1, head="polar")


def test_gpt2_config_steps_the_embedding_and_head_at_their_own_rate():
  # configs/gpt2.py gives the embed and head classes the authors' 1e-3 (the hybrid
  # step's scale ν grows with √(V·d)); the factory must hand it to those classes only.
  from configs.gpt2 import get_config
  from optimizers.factory import make_optimizer

  section = get_config("optimizer=symmetric").optimizer
  assert section.head_learning_rate == section.embed_learning_rate == 1e-3
  section.schedule, section.grad_clip_norm = "constant", 0.0
  same = section.copy_and_resolve_references()
  same.head_learning_rate = same.embed_learning_rate = None
  params = gpt2_params()
  grads = jax.tree.map(lambda p: jnp.asarray(np.sign(p) + 0.1, p.dtype), params)
  step = lambda s: make_optimizer(s, 10).update(grads, make_optimizer(s, 10).init(params), params)
  (u, _), (v, _) = step(section), step(same)
  ratio = 1e-3 / section.learning_rate
  for name, a in _names(u).items():
    b = _names(v)[name]
    want = ratio * np.asarray(b) if name.endswith("embedding") else np.asarray(b)
    np.testing.assert_allclose(np.asarray(a), want, rtol=1e-5, atol=1e-9, err_msg=name)
