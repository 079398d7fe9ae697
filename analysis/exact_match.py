"""Exact-match accuracy on held-out arithmetic by greedy decoding.

The built-in math source (data/text_sources.py) writes every problem as

    QUESTION\\nWORKED SOLUTION\\nAnswer: ANSWER\\n

and keeps two families (MATH_OOD_FAMILIES: percentages, gcd) out of
training. A problem is solved when the greedy continuation's answer equals
ANSWER character for character. Two prompts:

- "question": the question line; the model writes the solution and the
  answer line itself (the answer is read after the first "Answer: ").
- "worked": everything up to "Answer: "; the model only states the result its
  worked solution reached (far easier: a tiny model can copy it).

Decoding is one jitted `lax.fori_loop` over a fixed number of new tokens, the
batch padded to the model's context T: each step runs the whole window (no
KV cache; causal attention makes the padding invisible) and writes the
argmax after each row's own last token. Prompts longer than T − max_new keep
their last tokens (the answer depends on the end of the prompt).
"""

import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from data import text_sources

PROMPTS = ("question", "worked")
ANSWER_MARK = "Answer: "


def held_out_problems(
  num_per_family: int, seed: int = 0, families: Sequence[str] = text_sources.MATH_OOD_FAMILIES
) -> list[tuple[str, str, str]]:
  """[(family, full text, answer)]: fresh problems of the held-out families
  (their own RNG stream, so they are not the OOD loss's documents either)."""
  rng = np.random.default_rng([seed, 7919])
  out = []
  for family in families:
    for _ in range(num_per_family):
      text = text_sources.math_problem(family, rng)
      out.append((family, text, text.rsplit(ANSWER_MARK, 1)[1].strip()))
  return out


def prompt_of(text: str, prompt: str) -> str:
  """The part of a problem's text the model is given (module docstring)."""
  if prompt == "question":
    return text.split("\n", 1)[0] + "\n"
  if prompt == "worked":
    return text.rsplit(ANSWER_MARK, 1)[0] + ANSWER_MARK
  raise ValueError(f"Unknown prompt {prompt!r}; known: {PROMPTS}.")


def answer_in(completion: str, prompt: str) -> str | None:
  """The answer a completion states (None: it states none)."""
  if prompt == "question":
    if ANSWER_MARK not in completion:
      return None
    completion = completion.split(ANSWER_MARK, 1)[1]
  return completion.split("\n", 1)[0].strip()


def pad_prompts(token_lists: Sequence[np.ndarray], context: int, max_new: int):
  """(tokens_BxT int32 left-aligned, zero-padded; lengths_B): each prompt cut to
  its last context − max_new tokens."""
  keep = context - max_new
  if keep < 1:
    raise ValueError(f"max_new={max_new} leaves no room for a prompt in a context of {context}.")
  tokens = np.zeros((len(token_lists), context), np.int32)
  lengths = np.zeros(len(token_lists), np.int32)
  for i, ids in enumerate(token_lists):
    ids = np.asarray(ids, np.int32)[-keep:]
    tokens[i, : ids.size], lengths[i] = ids, ids.size
  return tokens, lengths


@functools.partial(jax.jit, static_argnums=(0, 4))
def greedy_decode(apply_fn: Callable, params, tokens_BxT, lengths_B, max_new: int) -> jax.Array:
  """The max_new greedy tokens after each row's prompt, int32 (B, max_new).
  apply_fn(params, tokens_BxT) -> logits (B, T, V) must be causal; pass the
  same apply_fn object every call (it keys the compiled code)."""
  rows = jnp.arange(tokens_BxT.shape[0])

  def step(i, tokens):
    logits_BxTxV = apply_fn(params, tokens)
    pos = lengths_B + i
    nxt = jnp.argmax(logits_BxTxV[rows, pos - 1], axis=-1).astype(tokens.dtype)
    return tokens.at[rows, pos].set(nxt)

  tokens = jax.lax.fori_loop(0, max_new, step, tokens_BxT)
  return jax.vmap(lambda t, n: jax.lax.dynamic_slice(t, (n,), (max_new,)))(tokens, lengths_B)


def exact_match(
  apply_fn: Callable,
  params,
  tokenizer,
  problems: Sequence[tuple[str, str, str]],
  context: int,
  prompt: str = "worked",
  max_new: int = 8,
  batch_size: int = 64,
) -> dict:
  """{"accuracy", "per_family": {family: accuracy}, "n", "examples"}: the share of
  ``problems`` (held_out_problems) whose greedy answer is exactly right."""
  ids = tokenizer.encode_batch([prompt_of(text, prompt) for _, text, _ in problems])
  correct, examples = [], []
  for start in range(0, len(problems), batch_size):
    chunk = ids[start : start + batch_size]
    n = len(chunk)
    chunk = list(chunk) + [chunk[-1]] * (batch_size - n)  # One compiled shape.
    tokens, lengths = pad_prompts(chunk, context, max_new)
    out = greedy_decode(apply_fn, params, jnp.asarray(tokens), jnp.asarray(lengths), max_new)
    out = np.asarray(out)
    for row, (_, _, answer) in zip(out[:n], problems[start : start + n]):
      stated = answer_in(tokenizer.decode(row), prompt)
      correct.append(stated == answer)
      if len(examples) < 3:
        examples.append({"answer": answer, "stated": stated})
  families = [f for f, _, _ in problems]
  correct = np.asarray(correct, bool)
  return {
    "accuracy": float(correct.mean()) if correct.size else float("nan"),
    "per_family": {
      f: float(correct[[g == f for g in families]].mean()) for f in dict.fromkeys(families)
    },
    "n": int(correct.size),
    "prompt": prompt,
    "max_new": int(max_new),
    "examples": examples,
  }
