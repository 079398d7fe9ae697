"""Orthogonalization: the gradient map of the nuclear norm, ∇‖X‖_* = U·Vᵀ.

For X = U·diag(σ)·Vᵀ (thin SVD) the polar factor is O = U·Vᵀ. Muon (Jordan et
al. 2024) approximates it with an odd matrix polynomial applied a few times,

    X ← a·X + b·(X Xᵀ) X + c·(X Xᵀ)² X,

which maps every singular value σ ∈ (0, 1] through p(σ) = aσ + bσ³ + cσ⁵ and
leaves the singular vectors alone. Presets:

- ``"quintic"``: (3.4445, −4.7750, 2.0315) at every step (Jordan et al. 2024,
  https://kellerjordan.github.io/posts/muon/). Tuned for speed, not accuracy:
  after 5 steps a full-rank input's singular values land in about [0.68, 1.13].
- ``"polar_express"``: the per-step minimax-optimal coefficients of Amsel,
  Persson, Musco, Gower, "The Polar Express: Optimal Matrix Sign Methods and
  Their Application to the Muon Algorithm" (arXiv:2505.16932, Algorithm 1),
  with the paper's 1.01 safety factor; steps past the list repeat the last one.
- ``"cubic"``: the classical Newton–Schulz iteration X ← 1.5·X − 0.5·X Xᵀ X
  (Björck & Bowie 1971; Higham, Functions of Matrices, 2008, §8.3), which
  converges to U·Vᵀ, slowly, for singular values in (0, √3).

Two ways to evaluate the same polynomial, picked by FLOP count (``gram=None``):
- standard: every step multiplies the m×n iterate (m ≤ n, the short side
  first): 4m²n + 2m³ FLOPs a step.
- Gram form: every iterate is X_k = Q_k·X₀ with Q_k a polynomial in the m×m
  Gram matrix A₀ = X₀X₀ᵀ, and A_k = X_k X_kᵀ = P_{k−1} A_{k−1} P_{k−1} with
  P = a·I + b·A + c·A². So the loop runs on m×m matrices alone and X₀ is
  multiplied once at the start (A₀) and once at the end (Q_K·X₀):
  4m²n + 2m³·(4K − 3) FLOPs for K steps. For n ≳ 1.5m it is cheaper (about
  1.8× on 768×3072 with K = 5). It is the same polynomial, not a new
  approximation; in f32 the two agree to rounding (tests check it). In bf16
  the Gram form accumulates error (Dao-AILab's Gram Newton–Schulz restarts for
  that), so ``gram=None`` uses it only for f32/f64 compute.
"""

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from optimizers import lapack

Coeffs = str | Sequence[float] | Sequence[Sequence[float]]

_PE_SAFETY = 1.01
_POLAR_EXPRESS_RAW = (
  (8.28721201814563, -23.595886519098837, 17.300387312530933),
  (4.107059111542203, -2.9478499167379106, 0.5448431082926601),
  (3.9486908534822946, -2.908902115962949, 0.5518191394370137),
  (3.3184196573706015, -2.488488024314874, 0.51004894012372),
  (2.300652019954817, -1.6689039845747493, 0.4188073119525673),
  (1.891301407787398, -1.2679958271945868, 0.37680408948524835),
  (1.8750014808534479, -1.2500016453999487, 0.3750001645474248),
)

# name -> (per-step coefficient list; the last entry repeats, input safety factor)
NS_PRESETS = {
  "quintic": (((3.4445, -4.7750, 2.0315),), 1.0),
  "polar_express": (
    tuple((a / _PE_SAFETY, b / _PE_SAFETY**3, c / _PE_SAFETY**5) for a, b, c in _POLAR_EXPRESS_RAW)
    + ((1.875, -1.25, 0.375),),
    _PE_SAFETY,
  ),
  "cubic": (((1.5, -0.5, 0.0),), 1.0),
}

ORTHOGONALIZE_METHODS = ("newton_schulz", "svd")


def ns_coefficients(coeffs: Coeffs, steps: int) -> tuple[np.ndarray, float]:
  """Resolves a preset name, one (a, b, c) triple or a per-step list of them.

  Returns a (steps, 3) float64 array (the last triple repeats when the list is
  shorter than ``steps``) and the factor the Frobenius norm is inflated by.
  """
  if steps < 1:
    raise ValueError(f"ns_steps must be >= 1, got {steps}.")
  safety = 1.0
  if isinstance(coeffs, str):
    if coeffs not in NS_PRESETS:
      raise ValueError(
        f"Unknown Newton-Schulz preset {coeffs!r}; known presets: "
        f"{sorted(NS_PRESETS)} (or pass (a, b, c) triples)."
      )
    coeffs, safety = NS_PRESETS[coeffs]
  table = np.asarray(coeffs, dtype=np.float64)
  if table.ndim == 1:
    table = table[None]
  if table.ndim != 2 or table.shape[1] != 3:
    raise ValueError(
      "Newton-Schulz coefficients must be a preset name, one (a, b, c) "
      f"triple or a list of triples; got shape {table.shape}."
    )
  rows = [table[min(i, len(table) - 1)] for i in range(steps)]
  return np.stack(rows), safety


def ns_flops(m: int, n: int, steps: int, gram: bool) -> int:
  """FLOPs of ``steps`` Newton–Schulz steps on an m×n matrix, m ≤ n."""
  m, n = min(m, n), max(m, n)
  if gram and steps >= 2:
    return 4 * m * m * n + 2 * m**3 * (4 * steps - 3)
  return steps * (4 * m * m * n + 2 * m**3)


def _use_gram(m: int, n: int, steps: int, dtype) -> bool:
  full_precision = jnp.finfo(dtype).bits >= 32
  return full_precision and ns_flops(m, n, steps, True) < ns_flops(m, n, steps, False)


def _ns_standard(x_MxN, table):
  for a, b, c in table:
    a_MxM = x_MxN @ jnp.swapaxes(x_MxN, -1, -2)
    b_MxM = b * a_MxM + c * (a_MxM @ a_MxM)
    x_MxN = a * x_MxN + b_MxM @ x_MxN
  return x_MxN


def _ns_gram(x_MxN, table):
  """Same polynomial as `_ns_standard`, iterated on the m×m Gram matrix."""
  eye_MxM = jnp.eye(x_MxN.shape[-2], dtype=x_MxN.dtype)
  a_MxM = x_MxN @ jnp.swapaxes(x_MxN, -1, -2)
  q_MxM = None  # Q_0 = I, never materialized.
  last = len(table) - 1
  for k, (a, b, c) in enumerate(table):
    p_MxM = a * eye_MxM + b * a_MxM + c * (a_MxM @ a_MxM)
    q_MxM = p_MxM if q_MxM is None else p_MxM @ q_MxM
    if k < last:  # A_{k+1} = P A_k P (P and A_k commute: both polynomials in A_0).
      a_MxM = (p_MxM @ a_MxM) @ p_MxM
  return q_MxM @ x_MxN


def newton_schulz(
  x: jax.Array,
  steps: int = 5,
  coeffs: Coeffs = "quintic",
  *,
  eps: float = 1e-7,
  compute_dtype=None,
  gram: bool | None = None,
) -> jax.Array:
  """Approximates U·Vᵀ of every matrix in ``x`` (shape (..., m, n)).

  Leading axes are batch axes. The iteration runs on the short side (tall
  matrices are transposed), after dividing each matrix by its Frobenius norm
  (times the preset's safety factor) so all singular values are ≤ 1.

  Args:
    x: array of rank ≥ 2.
    steps: number of polynomial steps.
    coeffs: a preset name (see `NS_PRESETS`), one (a, b, c) triple, or one
      triple per step.
    eps: added to the norm, so a zero matrix maps to zero.
    compute_dtype: dtype of the iteration (e.g. ``jnp.bfloat16``); defaults to
      ``x.dtype``. The norm is taken in f32 and the result has ``x.dtype``.
    gram: force the Gram form (True) or the standard one (False); None picks
      the cheaper in FLOPs for f32/f64 and the standard form in low precision.
  """
  if x.ndim < 2:
    raise ValueError(f"newton_schulz needs a matrix (rank >= 2), got shape {x.shape}.")
  table, safety = ns_coefficients(coeffs, steps)
  transpose = x.shape[-2] > x.shape[-1]
  x_MxN = jnp.swapaxes(x, -1, -2) if transpose else x
  norm = jnp.sqrt(jnp.sum(jnp.square(x_MxN.astype(jnp.float32)), axis=(-2, -1), keepdims=True))
  dtype = jnp.dtype(compute_dtype or x.dtype)
  x_MxN = (x_MxN.astype(jnp.float32) / (norm * safety + eps)).astype(dtype)
  m, n = x_MxN.shape[-2:]
  use_gram = _use_gram(m, n, steps, dtype) if gram is None else gram
  table = [tuple(float(v) for v in row) for row in table]
  out = _ns_gram(x_MxN, table) if use_gram else _ns_standard(x_MxN, table)
  out = jnp.swapaxes(out, -1, -2) if transpose else out
  return out.astype(x.dtype)


def frobenius_inner(x: jax.Array, y: jax.Array) -> jax.Array:
  """⟨X, Y⟩ per matrix of x, y (..., m, n), as (..., 1, 1).

  Written as two matrix-vector products, not jnp.sum: on XLA:CPU a reduction
  whose input depends on a Newton–Schulz output made the whole step 8–10×
  slower (one 768×3072 matrix: NS 0.5 s, ⟨X, NS(X)⟩ by jnp.sum 5.9 s, by these
  products 0.7 s; an optimization_barrier did not help), and PolarGrad, Freon
  and the symmetric stack all need such an inner product."""
  p_MxN = x * y
  rows_M = p_MxN @ jnp.ones(p_MxN.shape[-1], p_MxN.dtype)
  return (rows_M @ jnp.ones(p_MxN.shape[-2], p_MxN.dtype))[..., None, None]


def polar_svd(x: jax.Array) -> jax.Array:
  """Exact U·Vᵀ of every matrix in ``x`` (shape (..., m, n)) from the thin SVD.

  Directions with singular value below the numerical-rank tolerance
  (σ_max·max(m, n)·machine eps, as numpy.linalg.matrix_rank) are dropped, so a
  zero or rank-deficient input gives the polar factor of its range (0 for 0),
  a subgradient of the nuclear norm, instead of arbitrary singular vectors.
  """
  if x.ndim < 2:
    raise ValueError(f"polar_svd needs a matrix (rank >= 2), got shape {x.shape}.")
  work = x.astype(jnp.promote_types(x.dtype, jnp.float32))
  u, s, vt = lapack.svd(work)
  tol = s[..., :1] * max(x.shape[-2:]) * jnp.finfo(work.dtype).eps
  keep = (s > tol).astype(work.dtype)
  return ((u * keep[..., None, :]) @ vt).astype(x.dtype)


def orthogonalize(x: jax.Array, method: str = "newton_schulz", **options) -> jax.Array:
  """U·Vᵀ of every matrix in ``x`` by ``method``: "newton_schulz" (options of
  `newton_schulz`: steps, coeffs, eps, compute_dtype, gram) or "svd" (exact)."""
  if method == "newton_schulz":
    return newton_schulz(x, **options)
  if method == "svd":
    if options:
      raise ValueError(f"method='svd' takes no options, got {sorted(options)}.")
    return polar_svd(x)
  raise ValueError(f"Unknown orthogonalization method {method!r}; known: {ORTHOGONALIZE_METHODS}.")


def matrix_flops_per_step(
  shape: Sequence[int], steps: int, gram: bool | None = None, dtype=jnp.float32
) -> int:
  """FLOPs `newton_schulz` spends on a leaf of this shape (for benchmarks)."""
  *batch, m, n = shape
  m, n = min(m, n), max(m, n)
  use_gram = _use_gram(m, n, steps, dtype) if gram is None else gram
  return math.prod(batch) * ns_flops(m, n, steps, use_gram)
