"""Pion: rotate the weights by truncated exponentials of Lie-algebra momenta.

Shi, Li, Qiu, Wen, Buchholz, Liu, "Pion" (arXiv:2605.12492); the rule follows the
authors' code (github.com/Sphere-AI-Lab/pion, megatron-lm/megatron/core/optimizer/
pion.py). Per matrix W (out × in, the paper's layout) and gradient G:

    G_in  = WᵀG − GᵀW   (in × in, skew)       G_out = GWᵀ − WGᵀ   (out × out, skew)
    m_in ← β₁·m_in + (1 − β₁)·G_in            m_out ← β₁·m_out + (1 − β₁)·G_out
    A_in = −m_in,  A_out = −m_out             (second_moment: A = −m/(√v + ε) with
                                               v_in ← β₂·v_in + (1 − β₂)·G_in⊙G_in,
                                               likewise v_out)
    base = W·A_in + A_out·W
    α = η·rms·√(out·in)/(‖base‖_F + 1e−12),   Â = α·A
    E(Â) = I + Â + Â²/2 + … + Â^d/d!           (degree d, default 2)
    W ← E(Â_out)·W·E(Â_in)

so the first-order step W·Â_in + Â_out·W has RMS exactly rms·η, and no bias
correction is applied (as in the code). ``side``: "both" (default), "in" (A_out
= 0), "out" (A_in = 0), "alternate" ("in" on odd steps 1, 3, …, "out" on even
ones, the code's step counter; both momenta still update every step). The RMS
scale uses the base of the sides that move. ``momentum="ambient"`` is the code's
transported-ambient geometry: m ← β₁·m + (1 − β₁)·G in W's own space
(second_moment: v ← β₂·v + (1 − β₂)·m⊙m, G̃ = m/(√v + ε), the code's choice of m⊙m
rather than G⊙G), the generators are A_in = −(WᵀG̃ − G̃ᵀW), A_out = −(G̃Wᵀ − WG̃ᵀ)
of the sides that move, and after the step m ← E(Â_out)·m·E(Â_in).

Why it preserves the spectrum: for skew A, E₂(A)ᵀE₂(A) = E₂(A)E₂(A)ᵀ = I + A⁴/4,
so each side changes the singular values of W only at 4th order in Â (exactly
not at all with the exact exponential). Weight decay would break that, so Pion
matrices take none; the section's ``weight_decay`` goes to the AdamW leaves (the
authors' Megatron script applies its --weight-decay to the AdamW groups only).

How E(Â)·W is evaluated: as W + Â·W + Â·(Â·W)/2, term by term (never forming
Â²), and the first product of the first side applied is the one already
computed for the RMS scale (base), times α. With a = 2·out·in² (one product on
the in side) and b = 2·out²·in (one on the out side), the FLOPs per matrix and
step are, for degree d and lie momentum,

    generators a + b, base a + b, E's (d − 1)·max(a, b) + d·min(a, b)
    total (d + 2)·(a + b) − max(a, b);   d = 2: 3·max(a, b) + 4·min(a, b)

(a square n × n matrix: 14n³ at d = 2, against 30n³ for Muon's NS5). The side
with the larger products goes first so its product is the reused one; the
result is the same matrix E_out·W·E_in. Sides "in"/"out": (d + 1)·a resp.
(d + 1)·b (the other generator is not computed); "alternate": (d + 1)·a + b on an
in step, a + (d + 1)·b on an out step. Ambient momentum adds d·(a + b) for
transporting m (no product to reuse). The second moment is elementwise.

Not followed from the code: it splits fused QKV kernels per head and SwiGLU
fc1 into up/gate before the update; here a leaf is one matrix (GPT-2's c_attn
(d, 3d) is rotated as a whole). Layout: a flax kernel is (…, in, out) = Wᵀ, and
the step runs on the kernel as stored, K ← E(α·B_in)·K·E(α·B_out) (the transpose of
the rule above, `_rotate`), so no copy of W is transposed in and out; leading axes
(L, in, out) are stacked matrices, one W, one α per leading index. Leaves `default_muon_routing` does not
select (embeddings, heads, vectors) go to AdamW, as in `optimizers.muon.muon`.
"""

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optimizers import domains
from optimizers.muon import default_muon_routing
from optimizers.zoo_common import (
  ADAM_DOMAINS,
  ROUTING_DOMAIN,
  adamw_side,
  check_matrix,
  state_dtype,
  unzip,
)

PION_SIDES = ("both", "in", "out", "alternate")
PION_MOMENTA = ("lie", "ambient")

IMPLICIT_BIAS_NOTE = (
  "None in the Lion-K sense, and no ball: Pion multiplies W by near-orthogonal factors, so its "
  "singular values are preserved up to the 4th-order drift of the truncated exponential "
  "(E₂ᵀE₂ = I + Â⁴/4 per side) and the spectrum stays near that of the initialization; Pion "
  "matrices take no weight decay (AdamW leaves: ℓ∞ ball with the section's weight_decay)."
)


class ScaleByPionState(NamedTuple):
  count: jax.Array  # shape (), int32: steps taken.
  # Per matrix leaf a dict: lie momenta "m_in" (…, in, in), "m_out" (…, out, out)
  # (+ "v_in", "v_out" with the second moment), only for the sides used, as the
  # paper's generators of W = kernelᵀ; ambient momentum "m" (+ "v") laid out like
  # the leaf (…, in, out).
  moments: optax.Updates


def _t(x):
  return jnp.swapaxes(x, -1, -2)


def _skew(x):
  return x - _t(x)


def _frobenius(x):
  return jnp.sqrt(jnp.sum(jnp.square(x), axis=(-2, -1), keepdims=True))


# The series take Â = c·A as the matrix A and the scalar c: c multiplies each product's
# result (the size of x), never A itself, so the generator (up to out × out) is not
# rewritten in memory for the scale or the sign.


def _right_series(x, xa, a, degree: int, c=1.0):
  """x·E(c·A) given xa = x·A: x + c·xA + c²·(xA)A/2 + …, each term from the last."""
  term = c * xa
  out = x + term
  for k in range(2, degree + 1):
    term = (term @ a) * (c / k)
    out = out + term
  return out


def _left_series(a, x, ax, degree: int, c=1.0):
  """E(c·A)·x given ax = A·x."""
  term = c * ax
  out = x + term
  for k in range(2, degree + 1):
    term = (a @ term) * (c / k)
    out = out + term
  return out


def times_truncated_exp(x, a, degree: int = 2, c=1.0):
  """x·E(c·A), E(A) = Σ_{k≤degree} A^k/k!, without forming any power of A."""
  return _right_series(x, x @ a, a, degree, c)


def truncated_exp_times(a, x, degree: int = 2, c=1.0):
  """E(c·A)·x, E(A) = Σ_{k≤degree} A^k/k!, without forming any power of A."""
  return _left_series(a, x, a @ x, degree, c)


def _scale_and_products(x, b_left, b_right, learning_rate, rms):
  """α = η·rms·√(rows·cols)/(‖B_left·X + X·B_right‖_F + 1e−12) per matrix (…, 1, 1), with
  the products B_left·X and X·B_right (None for a side that does not move), reused."""
  bx = None if b_left is None else b_left @ x
  xb = None if b_right is None else x @ b_right
  base = sum(y for y in (bx, xb) if y is not None)
  rows, cols = x.shape[-2:]
  alpha = learning_rate * rms * math.sqrt(rows * cols) / (_frobenius(base) + 1e-12)
  return alpha, bx, xb


def rms_scale(w_OxI, a_in_IxI, a_out_OxO, learning_rate, rms: float = 0.2):
  """α = η·rms·√(out·in)/(‖W·A_in + A_out·W‖_F + 1e−12) per matrix (…, 1, 1), so that
  ‖W·(αA_in) + (αA_out)·W‖_F = rms·η·√(out·in). None is a side that does not move.
  Returns (α, W·A_in or None, A_out·W or None): the products are reused."""
  alpha, aw, wa = _scale_and_products(w_OxI, a_out_OxO, a_in_IxI, learning_rate, rms)
  return alpha, wa, aw


def _rotate(k_IxO, b_in, b_out, learning_rate, rms, degree, m_IxO=None):
  """The paper's W ← E(Â_out)·W·E(Â_in) (and m by the same factors when given), done on
  the kernel K = Wᵀ (…, in, out) as stored, so that no (…, out, in) copy of W is made and
  none transposed back: K ← E(Â_in)ᵀ·K·E(Â_out)ᵀ = E(α·B_in)·K·E(α·B_out), because a
  truncated exponential of a skew matrix has E(A)ᵀ = E(−A) and Â = α·A = −α·B for the
  momenta as stored (B = −A: no negated copy). None = identity. α from
  `_scale_and_products`: ‖B_in·K + K·B_out‖_F = ‖(W·A_in + A_out·W)ᵀ‖_F."""
  alpha, bk, kb = _scale_and_products(k_IxO, b_in, b_out, learning_rate, rms)
  in_dim, out_dim = k_IxO.shape[-2:]
  if b_out is None:
    k_IxO = _left_series(b_in, k_IxO, bk, degree, alpha)
  elif b_in is None:
    k_IxO = _right_series(k_IxO, kb, b_out, degree, alpha)
  elif out_dim < in_dim:  # The in side's products (in²·out) are the larger: reuse B_in·K.
    k_IxO = _left_series(b_in, k_IxO, bk, degree, alpha)
    k_IxO = times_truncated_exp(k_IxO, b_out, degree, alpha)
  else:
    k_IxO = _right_series(k_IxO, kb, b_out, degree, alpha)
    k_IxO = truncated_exp_times(b_in, k_IxO, degree, alpha)
  if m_IxO is not None:
    if b_in is not None:
      m_IxO = truncated_exp_times(b_in, m_IxO, degree, alpha)
    if b_out is not None:
      m_IxO = times_truncated_exp(m_IxO, b_out, degree, alpha)
  return k_IxO, m_IxO


def _check(side, momentum, degree):
  if side not in PION_SIDES:
    raise ValueError(f"Unknown Pion side {side!r}; known: {PION_SIDES}.")
  if momentum not in PION_MOMENTA:
    raise ValueError(f"Unknown Pion momentum {momentum!r}; known: {PION_MOMENTA}.")
  if not isinstance(degree, int) or isinstance(degree, bool) or degree < 1:
    raise ValueError(
      f"Pion degree must be an int >= 1, got {degree!r} (under optax.inject_hyperparams "
      "list 'degree' in static_args)."
    )


def scale_by_pion(
  learning_rate: optax.ScalarOrSchedule,
  b1: float = 0.9,
  b2: float = 0.999,
  rms: float = 0.2,
  degree: int = 2,
  side: str = "both",
  momentum: str = "lie",
  second_moment: bool = False,
  eps: float = 1e-8,
  mu_dtype: Any | None = None,
) -> optax.GradientTransformation:
  """Pion's whole step (module docstring) on every leaf, each a (stack of)
  (fan_in, fan_out) kernels: the update is W_new − W, the learning rate included
  (the step is multiplicative, so η acts inside E, not as a final scale).

  Args:
    learning_rate: η (a float or an optax schedule of the step count).
    b1: decay β₁ of the momenta.
    b2: decay β₂ of the optional second moment.
    rms: the RMS of the first-order step, in units of η.
    degree: degree d of the truncated exponential (2: the paper's).
    side: "both", "in", "out" or "alternate".
    momentum: "lie" (momenta of the skew generators) or "ambient" (momentum of
      G in W's space, transported by the same rotations).
    second_moment: divide the momentum by √v + ε elementwise.
    eps: ε of that division.
    mu_dtype: dtype of the stored moments (default float32; the step is f32).
  """
  _check(side, momentum, degree)
  dtype = state_dtype(mu_dtype)
  uses_in, uses_out = side in ("both", "in", "alternate"), side in ("both", "out", "alternate")

  def init_leaf(p):
    check_matrix(p, "Pion")
    *batch, fan_in, fan_out = p.shape
    kinds = ("m", "v") if second_moment else ("m",)
    if momentum == "ambient":
      return {k: jnp.zeros(p.shape, dtype) for k in kinds}
    sides = {"in": fan_in} if uses_in else {}
    sides |= {"out": fan_out} if uses_out else {}
    return {f"{k}_{s}": jnp.zeros((*batch, n, n), dtype) for s, n in sides.items() for k in kinds}

  def init_fn(params):
    return ScaleByPionState(jnp.zeros([], jnp.int32), jax.tree.map(init_leaf, params))

  def lie_generator(skew_grad, st, name):
    """(B = −A, new moments) of one side from its skew gradient: the momentum itself."""
    m = b1 * st["m_" + name].astype(jnp.float32) + (1.0 - b1) * skew_grad
    new, b = {"m_" + name: m}, m
    if second_moment:
      v = b2 * st["v_" + name].astype(jnp.float32) + (1.0 - b2) * jnp.square(skew_grad)
      new["v_" + name], b = v, m / (jnp.sqrt(v) + eps)
    return b, new

  def leaf_update(g, w, st, in_step, lr):
    # Kernel layout throughout: K = Wᵀ, G_k = Gᵀ (…, in, out); the transposed operands
    # of the products are folded into the GEMMs, so nothing is copied to W's layout.
    k_IxO, g_IxO = w.astype(jnp.float32), g.astype(jnp.float32)
    if momentum == "lie":
      gens, new = {}, {}
      if uses_in:
        x_IxI = k_IxO @ _t(g_IxO)  # WᵀG
        gens["in"], moments = lie_generator(_skew(x_IxI), st, "in")
        new.update(moments)
      if uses_out:
        y_OxO = _t(g_IxO) @ k_IxO  # GWᵀ
        gens["out"], moments = lie_generator(_skew(y_OxO), st, "out")
        new.update(moments)
      gen_in, gen_out = (lambda: gens["in"]), (lambda: gens["out"])
      m_IxO = None
    else:
      m_IxO = b1 * st["m"].astype(jnp.float32) + (1.0 - b1) * g_IxO
      new, gt_IxO = {"m": m_IxO}, m_IxO
      if second_moment:
        v_IxO = b2 * st["v"].astype(jnp.float32) + (1.0 - b2) * jnp.square(m_IxO)
        new["v"], gt_IxO = v_IxO, m_IxO / (jnp.sqrt(v_IxO) + eps)
      gen_in = lambda: _skew(k_IxO @ _t(gt_IxO))  # B = −A: skew(WᵀG̃).
      gen_out = lambda: _skew(_t(gt_IxO) @ k_IxO)  # skew(G̃Wᵀ).

    def step(which):
      b_in = gen_in() if which in ("both", "in") else None
      b_out = gen_out() if which in ("both", "out") else None
      return _rotate(k_IxO, b_in, b_out, lr, rms, degree, m_IxO)

    if side == "alternate":
      # A traced choice (the count may be batched under vmap): lax.cond runs one
      # side per step, and becomes a select of both when vmapped over seeds.
      k_new, m_new = jax.lax.cond(in_step, lambda: step("in"), lambda: step("out"))
    else:
      k_new, m_new = step(side)
    if momentum == "ambient":
      new["m"] = m_new
    new = {k: v.astype(dtype) for k, v in new.items()}
    return (k_new - w.astype(jnp.float32)).astype(w.dtype), new

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError("Pion needs the params: call update(grads, state, params).")
    lr = learning_rate(state.count) if callable(learning_rate) else learning_rate
    in_step = state.count % 2 == 0  # Step count + 1 is odd: the code's "in" steps.
    out = jax.tree.map(
      lambda g, w, st: leaf_update(g, w, st, in_step, lr), updates, params, state.moments
    )
    new_updates, moments = unzip(updates, out, 2)
    return new_updates, ScaleByPionState(optax.safe_increment(state.count), moments)

  return optax.GradientTransformation(init_fn, update_fn)


def pion_labels(params, routing: Callable[[Any, Any], bool] = default_muon_routing):
  """The pytree of "pion" / "adam" labels that ``routing(path, leaf)`` gives."""
  return jax.tree_util.tree_map_with_path(
    lambda path, leaf: "pion" if routing(path, leaf) else "adam", params
  )


def pion(
  learning_rate: optax.ScalarOrSchedule,
  b1: float = 0.9,
  b2: float = 0.999,
  rms: float = 0.2,
  degree: int = 2,
  side: str = "both",
  momentum: str = "lie",
  second_moment: bool = False,
  eps: float = 1e-8,
  weight_decay: float = 0.0,
  mask=None,
  adam_learning_rate: optax.ScalarOrSchedule | None = None,
  adam_b1: float = 0.9,
  adam_b2: float = 0.95,
  adam_eps: float = 1e-8,
  mu_dtype: Any | None = None,
  routing: Callable[[Any, Any], bool] | None = None,
) -> optax.GradientTransformation:
  """Pion on the leaves ``routing`` selects, AdamW on the others.

  Defaults: the paper's β₁ 0.9, β₂ 0.999, rms 0.2, degree 2, lie momentum, both
  sides, no second moment; learning rates 1e−3 to 5e−4 with cosine decay. (The
  authors' 60M script runs momentum "ambient", side "alternate", β₂ 0.95.)

  Args:
    learning_rate: η of the Pion side (a float or an optax schedule).
    b1, b2, rms, degree, side, momentum, second_moment, eps: see `scale_by_pion`.
    weight_decay: λ of the AdamW leaves only (multiplied by η): Pion matrices
      take no decay, which would change their spectrum.
    mask: which AdamW leaves decay (a pytree of bools or a function of the
      params, as optax).
    adam_learning_rate: AdamW's η (default: ``learning_rate``, as the code).
    adam_b1, adam_b2, adam_eps: AdamW's (the authors' script: 0.9, 0.95, 1e−8).
    mu_dtype: dtype of both sides' moments (Pion's default: float32).
    routing: ``routing(path, leaf) -> bool``, True for Pion; None is
      `default_muon_routing`. Under `optax.inject_hyperparams` list ``degree``,
      ``routing`` and ``mask`` (when a function) in ``static_args``.
  """
  _check(side, momentum, degree)
  routing = default_muon_routing if routing is None else routing
  pion_side = scale_by_pion(
    learning_rate, b1, b2, rms, degree, side, momentum, second_moment, eps, mu_dtype
  )
  adam_lr = learning_rate if adam_learning_rate is None else adam_learning_rate
  adam_side = adamw_side(adam_lr, adam_b1, adam_b2, adam_eps, weight_decay, mask, mu_dtype)
  return optax.partition(
    {"pion": pion_side, "adam": adam_side}, lambda params: pion_labels(params, routing)
  )


DOMAINS: dict[str, domains.Domain] = {
  "b1": domains.DECAY,
  "b2": domains.DECAY,
  "rms": domains.positive(),
  "degree": domains.integer(1),
  "side": domains.one_of(PION_SIDES),
  "momentum": domains.one_of(PION_MOMENTA),
  "second_moment": domains.boolean(),
  "eps": domains.positive(),
  **{k: v for k, v in ADAM_DOMAINS.items() if k != "adam_weight_decay"},
  "mu_dtype": domains.DTYPE,
  "routing": ROUTING_DOMAIN,
}
