"""Nexus against known answers: k = 1, Fish in NumPy, the O(γ²) expansion,
and alignment on a toy of two quadratic sources."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from optimizers import lion, muon
from optimizers.nexus import nexus, normalize_gradient, source_sequence


@pytest.fixture(autouse=True)
def float64():
  """The O(γ²) and Fish checks need float64; scoped so other tests keep f32."""
  with jax.enable_x64(True):
    yield


def _quadratic_sources(num_sources=3, dim=5, seed=0, dtype=np.float64):
  """L_s(θ) = ½(θ − c_s)ᵀ H_s (θ − c_s) with random SPD H_s; θ is {"a": (2,), "b": (dim-2,)}."""
  rng = np.random.default_rng(seed)
  hs, cs = [], []
  for _ in range(num_sources):
    q = rng.normal(size=(dim, dim))
    hs.append(q @ q.T / dim + 0.3 * np.eye(dim))
    cs.append(rng.normal(size=dim))
  hs, cs = np.stack(hs).astype(dtype), np.stack(cs).astype(dtype)

  def loss(params, s):
    theta = jnp.concatenate([params["a"], params["b"]])
    diff = theta - jnp.asarray(cs)[s]
    return 0.5 * diff @ jnp.asarray(hs)[s] @ diff

  return hs, cs, loss, jax.grad(loss)


def _split(theta):
  return {"a": jnp.asarray(theta[:2]), "b": jnp.asarray(theta[2:])}


def _flat(params):
  return np.concatenate([np.asarray(params["a"]), np.asarray(params["b"])])


def test_one_inner_step_is_the_outer_optimizer_on_a_sampled_normalized_gradient():
  _, _, _, grad_fn = _quadratic_sources()
  params = _split(np.linspace(-1, 1, 5))
  # Stateful outer optimizer, one source: Adam on the normalized gradient, step for step.
  opt = nexus(optax.adam(0.1), inner_learning_rate=0.05, inner_steps=1, num_sources=1)
  ref = optax.adam(0.1)
  p_nexus, s_nexus, p_ref, s_ref = params, opt.init(params), params, ref.init(params)
  for _ in range(10):
    u, s_nexus = opt.update(None, s_nexus, p_nexus, grad_fn=grad_fn)
    p_nexus = optax.apply_updates(p_nexus, u)
    u, s_ref = ref.update(normalize_gradient(grad_fn(p_ref, 0)), s_ref, p_ref)
    p_ref = optax.apply_updates(p_ref, u)
  np.testing.assert_allclose(_flat(p_nexus), _flat(p_ref), atol=1e-12)
  # Three sources: each step is SGD on the normalized gradient of exactly one of them.
  opt = nexus(optax.sgd(0.1), inner_learning_rate=0.05, inner_steps=1, num_sources=3)
  state, seen = opt.init(params), set()
  for _ in range(8):
    updates, state = opt.update(None, state, params, grad_fn=grad_fn)
    matches = [
      s
      for s in range(3)
      if np.allclose(
        _flat(updates), -0.1 * _flat(normalize_gradient(grad_fn(params, s))), atol=1e-12
      )
    ]
    assert len(matches) == 1
    seen.add(matches[0])
  assert len(seen) > 1  # The RNG in the state varies the source.


def test_raw_gradients_with_sgd_is_a_numpy_fish_step():
  hs, cs, _, grad_fn = _quadratic_sources(seed=1)
  eta, gamma, k = 0.3, 0.02, 5
  opt = nexus(
    optax.sgd(eta),
    inner_learning_rate=gamma,
    inner_steps=k,
    num_sources=3,
    normalize=None,
    source_order="cyclic",
  )
  theta = np.linspace(0.5, -0.5, 5)
  params, state = _split(theta), opt.init(_split(theta))
  step = jax.jit(lambda p, s: opt.update(None, s, p, grad_fn=grad_fn))
  for _ in range(4):
    updates, state = step(params, state)
    params = optax.apply_updates(params, updates)
    # Fish (Shi et al. 2022, Algorithm 1): inner SGD over the domains in turn,
    # then θ ← θ + ε(θ̃ − θ), with ε = η/(γ·k) here.
    tilde = theta.copy()
    for m in range(k):
      s = m % 3
      tilde = tilde - gamma * hs[s] @ (tilde - cs[s])
    theta = theta + eta / (gamma * k) * (tilde - theta)
    np.testing.assert_allclose(_flat(params), theta, rtol=1e-12, atol=1e-12)


def _pseudo_gradient(grad_fn, params, gamma, k, num_sources):
  opt = nexus(
    optax.identity(),
    inner_learning_rate=gamma,
    inner_steps=k,
    num_sources=num_sources,
    source_order="cyclic",
  )
  return opt.update(None, opt.init(params), params, grad_fn=grad_fn)[0]


def test_pseudo_gradient_expansion_remainder_is_second_order():
  """G = d̄ − (γ/k)·Σ_m Σ_{l<m} J_{s_m} d_{s_l} + O(γ²), J_s d = JVP of the
  normalized gradient map; the remainder shrinks ~4× when γ halves."""
  _, _, _, grad_fn = _quadratic_sources(seed=2)
  k, num_sources = 4, 3
  params = _split(np.array([0.3, -1.2, 0.8, 2.0, -0.4]))
  order = [m % num_sources for m in range(k)]
  d = lambda p, s: normalize_gradient(grad_fn(p, s))
  ds = [_flat(d(params, s)) for s in order]
  mean_d = np.mean(ds, axis=0)
  correction = np.zeros(5)
  for m in range(k):
    for j in range(m):
      tangent = _split(ds[j])
      correction += _flat(jax.jvp(lambda p: d(p, order[m]), (params,), (tangent,))[1])
  remainders = []
  for gamma in (0.02, 0.01, 0.005):
    got = _flat(_pseudo_gradient(grad_fn, params, gamma, k, num_sources))
    remainders.append(np.linalg.norm(got - (mean_d - gamma / k * correction)))
  ratios = [remainders[0] / remainders[1], remainders[1] / remainders[2]]
  np.testing.assert_allclose(ratios, [4.0, 4.0], rtol=0.1)
  # And the first-order term matters: without it the error is only O(γ).
  first = np.linalg.norm(_flat(_pseudo_gradient(grad_fn, params, 0.01, k, num_sources)) - mean_d)
  assert first > 10 * remainders[1]


def test_source_orders():
  rng = jax.random.PRNGKey(0)
  np.testing.assert_array_equal(source_sequence(rng, 5, 3, "cyclic"), [0, 1, 2, 0, 1])
  perm = np.asarray(source_sequence(rng, 4, 4))
  assert sorted(perm) == [0, 1, 2, 3]
  assert len(set(np.asarray(source_sequence(rng, 3, 5)))) == 3
  counts = np.bincount(np.asarray(source_sequence(rng, 7, 3)), minlength=3)
  assert counts.min() >= 2 and counts.max() <= 3
  orders = {tuple(np.asarray(source_sequence(jax.random.PRNGKey(i), 3, 3))) for i in range(20)}
  assert len(orders) > 2


@pytest.mark.parametrize(
  "outer",
  [lambda: optax.adamw(1e-3), lambda: lion(1e-3), lambda: muon(1e-2)],
  ids=["adamw", "lion", "muon"],
)
def test_wraps_any_outer_optimizer_under_jit(outer):
  params = {"w": jnp.ones((4, 3), jnp.float32), "b": jnp.zeros(3, jnp.float32)}
  data = jnp.arange(24, dtype=jnp.float32).reshape(2, 3, 4) / 24

  def loss(p, s):
    return jnp.sum((data[s] @ p["w"] + p["b"] - 1.0) ** 2)

  opt = nexus(outer(), inner_learning_rate=0.01, inner_steps=3, num_sources=2)
  state = opt.init(params)
  step = jax.jit(lambda p, s: opt.update(None, s, p, grad_fn=jax.grad(loss)))
  updates, state2 = step(params, state)
  assert jax.tree.map(jnp.shape, updates) == jax.tree.map(jnp.shape, params)
  assert int(state2.count) == 1 and not np.array_equal(state2.rng, state.rng)


def test_bad_arguments_are_named():
  with pytest.raises(ValueError, match="inner_steps >= 1"):
    nexus(optax.sgd(0.1), 0.1, 0, 3)
  with pytest.raises(ValueError, match="Unknown normalize 'l3'"):
    nexus(optax.sgd(0.1), 0.1, 3, 3, normalize="l3")
  with pytest.raises(ValueError, match="Unknown source_order"):
    nexus(optax.sgd(0.1), 0.1, 3, 3, source_order="zigzag")
  opt = nexus(optax.sgd(0.1), 0.1, 3, 3)
  with pytest.raises(ValueError, match="needs params and grad_fn"):
    opt.update(None, opt.init(jnp.ones(2)), jnp.ones(2))


def test_two_sources_on_a_valley_nexus_ends_where_their_gradients_agree_more():
  """Two sources of one factored (two-layer linear, scalar) model f = u·v,
  L_1 = ½(uv − 1)², L_2 = ½(uv − 3)²: quadratic in the model output, and the
  summed loss has a curve of minima, the hyperbola uv = 2 (loss 1).

  Why not the cosine itself: for two sources, at any stationary point of
  L_1 + L_2 the gradients are exactly opposite (∇L_1 = −∇L_2, cosine −1),
  so the cosine cannot tell minima of the sum apart. What varies along the
  valley is how strongly the sources disagree there: ∇L_s = ±(v, u), so
  ⟨∇L_1, ∇L_2⟩ = −(u² + v²), largest (least negative) at the balanced point
  u = v = √2. Nexus's first-order term ascends the sources' gradient inner
  product (cosine, for normalized gradients; optimizers/nexus.py), so from the
  same unbalanced start GD stays near its conserved u² − v² (≈ (3.05, 0.66))
  while Nexus(SGD) drifts along the valley towards the balanced point, at about
  the same summed loss. Raw gradients (normalize=None, the Fish limit): in this
  one-feature model both sources' gradients are always parallel to (v, u), so
  the normalized mean vanishes anywhere 1 < uv < 3 and normalized Nexus stops
  at a Pareto point, not on the valley of the sum.
  """
  targets = jnp.array([1.0, 3.0])
  loss = lambda p, s: 0.5 * (p["u"] * p["v"] - targets[s]) ** 2
  total = lambda p: loss(p, 0) + loss(p, 1)
  grad_fn = jax.grad(loss)
  start = {"u": jnp.float64(3.0), "v": jnp.float64(0.3)}

  def run(opt, nexus_mode, steps=1000):
    def body(carry, _):
      p, state = carry
      if nexus_mode:
        u, state = opt.update(None, state, p, grad_fn=grad_fn)
      else:
        u, state = opt.update(jax.grad(total)(p), state, p)
      return (optax.apply_updates(p, u), state), None

    return jax.jit(lambda p: jax.lax.scan(body, (p, opt.init(p)), None, length=steps)[0][0])(start)

  gd = run(optax.sgd(0.05), False)
  nx = run(
    nexus(
      optax.sgd(0.05),
      inner_learning_rate=0.05,
      inner_steps=2,
      num_sources=2,
      normalize=None,
      source_order="cyclic",
    ),
    True,
  )
  inner = lambda p: float(
    sum(
      jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(grad_fn(p, 0)), jax.tree.leaves(grad_fn(p, 1)))
    )
  )
  # Both end on the valley (summed loss 1 at its minima) ...
  assert float(total(gd)) == pytest.approx(1.0, abs=1e-3)
  assert float(total(nx)) == pytest.approx(1.0, abs=0.02)
  # ... but Nexus where the sources' gradients conflict much less.
  assert inner(nx) > 0.6 * inner(gd)  # about −4.9 against −9.7
  assert abs(float(nx["u"] - nx["v"])) < 0.5 < abs(float(gd["u"] - gd["v"]))


@pytest.mark.parametrize("control", ["random_direction", "same_source"])
def test_control_has_nexus_pseudo_gradient_norm_and_another_direction(control):
  """Same state and batch: the control's pseudo-gradient (outer = identity, so the
  update is G itself) has Nexus's norm exactly, points elsewhere, and same_source's
  unscaled norm differs from Nexus's (the reason for the rescaling)."""
  from optimizers.nexus import pseudo_gradient

  _, _, _, grad = _quadratic_sources(num_sources=3, dim=6, seed=2)
  params = _split(np.linspace(-1.0, 1.0, 6))
  kwargs = dict(inner_learning_rate=0.3, inner_steps=3, num_sources=3, seed=4)

  def first_update(opt):  # Jitted: one compile instead of many eager dispatches.
    return jax.jit(lambda p: opt.update(None, opt.init(p), p, grad_fn=grad)[0])(params)

  g_nexus = first_update(nexus(optax.identity(), **kwargs))
  g_ctrl = first_update(nexus(optax.identity(), control=control, **kwargs))
  n_nexus, n_ctrl = float(optax.tree.norm(g_nexus)), float(optax.tree.norm(g_ctrl))
  assert n_ctrl == pytest.approx(n_nexus, rel=1e-12)
  cos = float(optax.tree.vdot(g_nexus, g_ctrl)) / (n_nexus * n_ctrl)
  assert cos < 0.999
  if control == "same_source":  # The unscaled same-source loop: its norm ratio.
    seq = source_sequence(jax.random.split(jax.random.PRNGKey(4))[1], 3, 3)
    raw = pseudo_gradient(params, grad, jnp.full_like(seq, seq[0]), 0.3, "global")
    ratio = float(optax.tree.norm(raw)) / n_nexus
    print(f"same_source unscaled/Nexus pseudo-gradient norm: {ratio:.3f}; cosine {cos:.3f}")
    assert ratio > 1.0  # One source's steps agree more than K sources' do.
  if control == "random_direction":  # k = 1: G is d̄ itself, nothing to randomize.
    c1 = first_update(nexus(optax.identity(), control=control, **dict(kwargs, inner_steps=1)))
    s1 = source_sequence(jax.random.split(jax.random.PRNGKey(4))[1], 1, 3)[0]
    d1 = _flat(grad(params, s1))
    np.testing.assert_allclose(_flat(c1), d1 / np.linalg.norm(d1), rtol=1e-10, atol=1e-12)
  with pytest.raises(ValueError, match="Unknown nexus control 'shuffle'"):
    nexus(optax.identity(), control="shuffle", **kwargs)


def test_the_factory_passes_the_control_through(monkeypatch):
  """optimizer.nexus.control reaches nexus(...) (no compile: the constructor is stubbed)."""
  from configs.gpt2 import get_config
  from optimizers import factory

  seen = {}
  monkeypatch.setattr(factory, "nexus", lambda outer, **kw: seen.update(kw))
  config = get_config("runlocal,nexus").optimizer
  config.nexus.control = "same_source"
  factory.make_optimizer(config, num_steps=4, num_sources=3)
  assert seen["control"] == "same_source" and seen["num_sources"] == 3
