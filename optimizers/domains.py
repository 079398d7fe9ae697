"""Hyperparameter domains: what values a config key may take, as data.

Every registered optimizer declares one `Domain` per hyperparameter beside its
constructor (``register_optimizer(..., domains=...)``), and the schedule keys
shared by all optimizers have theirs in `optimizers.factory`; so a value outside
its domain (``b1=1.5``, ``eps=-1``, a negative final learning rate) is refused
with one line before anything is built, instead of training to garbage.
"""

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax.numpy as jnp


class Domain(NamedTuple):
  """``check(value) -> bool`` and what a valid value is, for the error line."""

  check: Callable[[Any], bool]
  hint: str


def is_number(value) -> bool:
  """A finite int or float (bools are not numbers here)."""
  return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def positive() -> Domain:
  return Domain(lambda v: is_number(v) and v > 0, "a finite number > 0")


def nonnegative() -> Domain:
  return Domain(lambda v: is_number(v) and v >= 0, "a finite number >= 0")


def interval(low: float, high: float, low_closed=True, high_closed=False) -> Domain:
  """A finite number in the interval; the default is [low, high)."""

  def check(v):
    if not is_number(v):
      return False
    above = v >= low if low_closed else v > low
    below = v <= high if high_closed else v < high
    return above and below

  brackets = ("[" if low_closed else "(") + f"{low}, {high}" + ("]" if high_closed else ")")
  return Domain(check, f"a number in {brackets}")


# A moving-average decay (b1, b2, β): 1 would never update, above 1 diverges.
DECAY = interval(0, 1)


def integer(minimum: int = 1) -> Domain:
  return Domain(
    lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= minimum,
    f"an int >= {minimum}",
  )


def boolean() -> Domain:
  return Domain(lambda v: isinstance(v, bool), "True or False")


def one_of(options: Sequence[Any]) -> Domain:
  options = tuple(options)
  return Domain(lambda v: isinstance(v, type(options[0])) and v in options, f"one of {options}")


def optional(domain: Domain) -> Domain:
  """None, or a value of ``domain``."""
  return Domain(lambda v: v is None or domain.check(v), f"None or {domain.hint}")


def _is_dtype(v) -> bool:
  try:
    jnp.dtype(v)
  except TypeError:
    return False
  return True


DTYPE = Domain(lambda v: v is None or (isinstance(v, str) and _is_dtype(v)), "None or a dtype name")


def check_value(section: str, key: str, value, domain: Domain) -> None:
  """Raises ValueError (one line) when ``value`` is outside ``domain``."""
  if not domain.check(value):
    raise ValueError(
      f"Config field {section}.{key}={value!r} is impossible: it must be {domain.hint}."
    )
