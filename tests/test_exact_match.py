"""analysis.exact_match against known answers: an oracle that emits each
problem's own text scores 1.0, a model that always says "x" scores 0.0, and a
tiny GPT-2 decodes through the same jitted path."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from analysis import exact_match as em
from data.tokenizers import ByteTokenizer
from models import gpt2

CONTEXT = 320  # the longest gcd text fits: the oracle needs whole prompts


def _oracle(problems, tokenizer):
  """apply_fn whose logits at (row, t) point at byte t+1 of that row's full text.
  The row is the one every written token agrees with (prompts end in "?\n" or
  "Answer: ", so no prompt is a prefix of another's text)."""
  full = np.zeros((len(problems), CONTEXT + 1), np.int32)
  for i, (_, text, _) in enumerate(problems):
    ids = tokenizer.encode(text)[: CONTEXT + 1]
    full[i, : ids.size] = ids
  table = jnp.asarray(full)

  def apply_fn(params, tokens_BxT):
    written = tokens_BxT[:, None, :] != 0
    agree = tokens_BxT[:, None, :] == table[None, :, :CONTEXT]
    match = jnp.all(agree | ~written, axis=-1)
    nxt = table[jnp.argmax(match, axis=1)][:, 1:]
    return jax.nn.one_hot(nxt, 256) * 10.0

  return apply_fn


@pytest.mark.parametrize("prompt", em.PROMPTS)
def test_right_answers_score_one_and_wrong_ones_zero(prompt):
  tok = ByteTokenizer()
  problems = em.held_out_problems(4, seed=1)
  assert {f for f, _, _ in problems} == {"percent", "gcd"}
  max_new = 8 if prompt == "worked" else 200
  # The oracle decodes each row by its own prompt: pad the last batch with copies.
  right = em.exact_match(
    _oracle(problems, tok), None, tok, problems, CONTEXT, prompt, max_new, batch_size=5
  )
  assert right["accuracy"] == 1.0 and right["n"] == 8
  assert right["per_family"] == {"percent": 1.0, "gcd": 1.0}

  def always_x(params, tokens_BxT):
    return jnp.broadcast_to(jax.nn.one_hot(ord("x"), 256), (*tokens_BxT.shape, 256))

  wrong = em.exact_match(always_x, None, tok, problems, CONTEXT, prompt, max_new, batch_size=8)
  assert wrong["accuracy"] == 0.0


def test_answer_parsing_and_prompts():
  text = "What is 10% of 40?\n10% of 40 = 40 × 10 / 100 = 400 / 100 = 4.\nAnswer: 4\n"
  assert em.prompt_of(text, "question") == "What is 10% of 40?\n"
  assert em.prompt_of(text, "worked").endswith("= 4.\nAnswer: ")
  assert em.answer_in("4\nWhat", "worked") == "4"
  assert em.answer_in("blah\nAnswer: 4\n", "question") == "4"
  assert em.answer_in("blah", "question") is None
  tokens, lengths = em.pad_prompts([np.arange(1, 10)], context=6, max_new=2)
  assert lengths.tolist() == [4] and tokens[0].tolist() == [6, 7, 8, 9, 0, 0]


@pytest.mark.slow  # GPT-2's eager init alone takes seconds on a loaded CPU.
def test_a_tiny_gpt2_decodes_through_the_same_path():
  cfg = gpt2.GPT2Config(vocab_size=256, block_size=32, n_layer=1, n_head=1, d_model=16)
  model = gpt2.GPT2(cfg)
  params = gpt2.init_params(model, jax.random.PRNGKey(0), 32)

  def apply_fn(p, tokens):
    return model.apply({"params": p}, tokens)

  problems = em.held_out_problems(1)
  out = em.exact_match(apply_fn, params, ByteTokenizer(), problems, 32, "worked", 4, 2)
  assert out["n"] == 2 and 0.0 <= out["accuracy"] <= 1.0
