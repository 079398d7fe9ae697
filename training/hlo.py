"""Collectives in compiled HLO text (``jitted.lower(...).compile().as_text()``), counted inside
and outside while-loop bodies: where GSPMD put communication, e.g. whether an iteration (a
Newton–Schulz loop, a scan over microbatches) communicates at every step or not at all."""

import re
from collections import Counter

COLLECTIVES = ("all-gather", "all-reduce", "reduce-scatter", "all-to-all", "collective-permute")
# An instruction "name = type op(" with op a collective or its async "-start" half (the "-done"
# half is not counted again).
_OP = re.compile(r"=\s*[^=]*?\s(" + "|".join(COLLECTIVES) + r")(?:-start)?\(")
_HEADER = re.compile(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$")
_CALLS = re.compile(
  r"(?:calls|to_apply|body|condition|true_computation|false_computation)=%?([\w.\-]+)"
)
_BRANCHES = re.compile(r"(?:branch_computations|called_computations)=\{([^}]*)\}")
_BODY = re.compile(r"\bwhile\(.*?body=%?([\w.\-]+)")


def _computations(text: str) -> dict[str, list[str]]:
  """Computation name -> its instruction lines."""
  out: dict[str, list[str]] = {}
  current = None
  for line in text.splitlines():
    header = _HEADER.match(line)
    if header and not line.startswith(" "):
      current = header.group(1)
      out[current] = []
    elif current is not None and line.strip() and line.strip() != "}":
      out[current].append(line)
  return out


def _callees(lines: list[str]) -> set[str]:
  names = set()
  for line in lines:
    names.update(_CALLS.findall(line))
    for group in _BRANCHES.findall(line):
      names.update(n.strip().lstrip("%") for n in group.split(","))
  return names


def collective_counts(text: str) -> dict[str, Counter]:
  """{"inside_loops": Counter(op -> n), "outside_loops": Counter(op -> n)}: collective
  instructions in computations reachable from a while loop's body, and the rest."""
  comps = _computations(text)
  inside: set[str] = set()
  todo = [b for lines in comps.values() for line in lines for b in _BODY.findall(line)]
  while todo:
    name = todo.pop()
    if name in inside or name not in comps:
      continue
    inside.add(name)
    todo.extend(_callees(comps[name]))
  counts = {"inside_loops": Counter(), "outside_loops": Counter()}
  for name, lines in comps.items():
    where = "inside_loops" if name in inside else "outside_loops"
    for line in lines:
      counts[where].update(_OP.findall(line))
  return counts
