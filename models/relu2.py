"""The two-layer ReLU network f(x) = c·Σⱼ aⱼ·relu(s·wⱼ·x + bⱼ).

Parameters (a plain pytree, `model.apply({"params": p}, x_BxD)`):

    hidden/kernel  W, (input_dim, width)   wⱼ are its columns
    hidden/bias    b, (width,)             only with use_bias
    head/kernel    A, (width, out_dim)     aⱼ are its rows

The output layer is named "head" on purpose: `optimizers.muon` routes any path
with a "head" component to AdamW, so Muon takes only the hidden matrix W.

Parametrizations (``parametrization``; the initialization scale and the
forward multipliers that go with it), d = input_dim, m = width:

- "standard" (LeCun/PyTorch-style): W ~ N(0, 1/d), A ~ N(0, 1/m), s = c = 1.
- "ntk" (Jacot et al. 2018): W, A ~ N(0, 1), s = 1/√d, c = 1/√m.
- "mean_field" (Mei, Montanari, Nguyen 2018; Chizat & Bach 2018):
  W, A ~ N(0, 1), s = 1/√d, c = 1/m.

Biases start at zero (``bias_init_std`` > 0 draws them from N(0, std²)).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

PARAMETRIZATIONS = ("standard", "ntk", "mean_field")


def scales(parametrization: str, input_dim: int, width: int) -> tuple[float, float, float, float]:
  """(std of W, std of A, input multiplier s, output multiplier c)."""
  init = parametrization
  if init == "standard":
    return input_dim**-0.5, width**-0.5, 1.0, 1.0
  if init == "ntk":
    return 1.0, 1.0, input_dim**-0.5, width**-0.5
  if init == "mean_field":
    return 1.0, 1.0, input_dim**-0.5, 1.0 / width
  raise ValueError(f"Unknown relu2 parametrization {init!r}; known: {PARAMETRIZATIONS}.")


class TwoLayerReLU(nn.Module):
  """x_BxD -> y_BxO, see the module docstring."""

  width: int
  out_dim: int = 1
  use_bias: bool = True
  parametrization: str = "standard"
  bias_init_std: float = 0.0

  @nn.compact
  def __call__(self, x_BxD: jax.Array) -> jax.Array:
    input_dim = x_BxD.shape[-1]
    w_std, a_std, s, c = scales(self.parametrization, input_dim, self.width)
    hidden = _Hidden(self.width, self.use_bias, w_std, self.bias_init_std, name="hidden")
    head = _Head(self.out_dim, a_std, name="head")
    return c * head(nn.relu(hidden(s * x_BxD)))


class _Hidden(nn.Module):
  width: int
  use_bias: bool
  w_std: float
  bias_init_std: float

  @nn.compact
  def __call__(self, x_BxD):
    w_DxM = self.param("kernel", nn.initializers.normal(self.w_std), (x_BxD.shape[-1], self.width))
    h_BxM = x_BxD @ w_DxM
    if self.use_bias:
      init = (
        nn.initializers.normal(self.bias_init_std)
        if self.bias_init_std > 0
        else nn.initializers.zeros
      )
      h_BxM = h_BxM + self.param("bias", init, (self.width,))
    return h_BxM


class _Head(nn.Module):
  out_dim: int
  a_std: float

  @nn.compact
  def __call__(self, h_BxM):
    a_MxO = self.param(
      "kernel", nn.initializers.normal(self.a_std), (h_BxM.shape[-1], self.out_dim)
    )
    return h_BxM @ a_MxO


def make_model(
  width: int,
  out_dim: int = 1,
  use_bias: bool = True,
  parametrization: str = "standard",
  bias_init_std: float = 0.0,
) -> TwoLayerReLU:
  """Checks the arguments (one-line errors) and builds the module."""
  if width < 1:
    raise ValueError(f"relu2 width must be >= 1, got {width}.")
  if out_dim < 1:
    raise ValueError(f"relu2 out_dim must be >= 1, got {out_dim}.")
  if parametrization not in PARAMETRIZATIONS:
    raise ValueError(
      f"Unknown relu2 parametrization {parametrization!r}; known: {PARAMETRIZATIONS}."
    )
  return TwoLayerReLU(width, out_dim, use_bias, parametrization, bias_init_std)


def num_params(params) -> int:
  return sum(int(jnp.size(p)) for p in jax.tree.leaves(params))
