"""The loop both trainers share: steps, periodic reports, checkpoints on
orbax's cadence, the last step and SIGTERM/SIGINT, with progress and rates.

    status = train_loop(manager, holder, num_steps, advance, report, check_finite, save)

``advance(step, last)`` runs one step (jitted, asynchronous) into
holder["state"]; timing (``on_start``) starts after the first, compiling, step; ``report(step,
last)`` does the periodic host work (logging, evaluation), ``check_finite()``
raises on a non-finite state (so a NaN is never saved) and ``save()`` writes a
checkpoint of the current state.
"""

import signal
from collections.abc import Callable

import jax
from absl import logging

STATUS_FINISHED, STATUS_PREEMPTED, STATUS_INTERRUPTED = "finished", "preempted", "interrupted"


def due(step: int, every: int, last: bool) -> bool:
  """A periodic action's cadence: every ``every`` steps and at the last step."""
  return bool(every) and step % every == 0 or last


class Preemption:
  """Turns SIGTERM (a preemption) and SIGINT (Ctrl-C) into a flag the loop
  checks after each step: it saves and stops instead of dying mid-write."""

  def __init__(self):
    self.signal = None

  def __enter__(self):
    self.previous = {s: signal.signal(s, self._handle) for s in (signal.SIGTERM, signal.SIGINT)}
    return self

  def _handle(self, signum, frame):
    del frame
    self.signal = signum

  def __exit__(self, *exc):
    for s, handler in self.previous.items():
      signal.signal(s, handler)

  @property
  def status(self) -> str:
    return STATUS_INTERRUPTED if self.signal == signal.SIGINT else STATUS_PREEMPTED


def train_loop(
  manager,
  holder: dict,
  num_steps: int,
  advance: Callable[[int, bool], None],
  report: Callable[[int, bool], None],
  check_finite: Callable[[], None],
  save: Callable[[], None],
  on_start: Callable[[int], None] | None = None,
) -> str:
  """Runs steps holder["state"]["step"]+1 … num_steps (``advance`` replaces
  holder["state"]); checkpoints on ``manager``'s cadence, at the last step and
  on a signal. Returns "finished", or "preempted" / "interrupted" after saving
  on SIGTERM / SIGINT."""
  start = int(holder["state"]["step"])

  def wait():
    jax.block_until_ready(holder["state"])

  should_save, directory = manager.should_save, manager.directory
  with Preemption() as preemption:
    for step in range(start + 1, num_steps + 1):
      last = step == num_steps
      advance(step, last)
      if step == start + 1:
        wait()
        if on_start is not None:
          on_start(step)
      report(step, last)
      if last or preemption.signal is not None or should_save(step):
        check_finite()
        save()
      if preemption.signal is not None and not last:
        name = signal.Signals(preemption.signal).name
        logging.warning(
          "%s: saved step %d to %s; rerun the same command to resume.", name, step, directory
        )
        return preemption.status
    wait()
  return STATUS_FINISHED
