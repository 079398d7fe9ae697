"""NumPy (float64) transcriptions of the update rules the optimizer tests check
against: Lion and Lion-K steps, Newton–Schulz and Muon, the polar factor,
dual norms and the projections onto their balls. Only NumPy here, so a test
never checks the code under test against itself."""

import numpy as np

# Jordan's quintic Newton–Schulz coefficients (github.com/KellerJordan/Muon).
QUINTIC = (3.4445, -4.7750, 2.0315)


def reference_newton_schulz(g, coeff_rows, safety=1.0):
  """NumPy transcription of Jordan's zeropower_via_newtonschulz5
  (github.com/KellerJordan/Muon), with one (a, b, c) row per step."""
  x = np.asarray(g, np.float64)
  tall = x.shape[-2] > x.shape[-1]
  if tall:
    x = x.T
  x = x / (np.linalg.norm(x) * safety + 1e-7)
  for a, b, c in coeff_rows:
    A = x @ x.T
    B = b * A + c * A @ A
    x = a * x + B @ x
  return x.T if tall else x


def composed_polynomial(sigma, coeff_rows):
  """What Newton–Schulz does to each singular value: σ ↦ aσ + bσ³ + cσ⁵, per row."""
  sigma = np.asarray(sigma, np.float64)
  for a, b, c in coeff_rows:
    sigma = a * sigma + b * sigma**3 + c * sigma**5
  return sigma


def reference_polar(g):
  """The exact polar factor U·Vᵀ of the thin SVD (∇ of the nuclear norm)."""
  u, _, vt = np.linalg.svd(np.asarray(g, np.float64), full_matrices=False)
  return u @ vt


def reference_lion_k_step(w, g, m, lr, b1, b2, wd, grad_k=np.sign):
  """One Lion-K step (Chen et al., arXiv:2310.05898): w ← w − η·(∇K(b1·m + (1 −
  b1)·g) + λ·w), m ← b2·m + (1 − b2)·g. ``grad_k = np.sign`` is Lion
  (arXiv:2302.06675). Returns (w, m)."""
  u = grad_k((1 - b1) * g + b1 * m)
  return w - lr * (u + wd * w), b2 * m + (1 - b2) * g


def reference_lion_step(w, g, m, lr, b1, b2, wd):
  """One Lion step: Lion-K with K = ℓ1 (∇K = sign)."""
  return reference_lion_k_step(w, g, m, lr, b1, b2, wd, np.sign)


def reference_muon_step(w, g, buf, lr, beta, wd, nesterov):
  """NumPy transcription of Muon's step (github.com/KellerJordan/Muon,
  muon.py: lerp momentum, Nesterov lerp, NS5, √max(1, out/in), decoupled wd),
  for the (fan_in, fan_out) layout. Returns (w, buf)."""
  buf = beta * buf + (1 - beta) * g
  u = (1 - beta) * g + beta * buf if nesterov else buf
  o = reference_newton_schulz(u, [QUINTIC] * 5)
  o = o * max(1, w.shape[-1] / w.shape[-2]) ** 0.5
  return w * (1 - lr * wd) - lr * o, buf


def reference_dual_norms(x, schatten_p=3.0):
  """K*(x) of a matrix for each K of the registry (K name -> value)."""
  x = np.asarray(x, np.float64)
  sv = np.linalg.svd(x, compute_uv=False)
  q = schatten_p / (schatten_p - 1)
  return {
    "l1": np.abs(x).max(),
    "l2": np.linalg.norm(x),
    "huber": np.abs(x).max(),
    "rownorm": np.linalg.norm(x, axis=1).max(),
    "nuclear": sv.max(),
    "spectral": sv.sum(),
    "schatten": np.sum(sv**q) ** (1 / q),
  }


def reference_project_spectral(w, radius):
  """argmin_{σ_max(y) ≤ r} ‖y − w‖_F: the singular values clipped at r."""
  u, s, vt = np.linalg.svd(np.asarray(w, np.float64), full_matrices=False)
  return u @ np.diag(np.minimum(s, radius)) @ vt
