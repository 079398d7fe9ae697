"""models.gpt2_hf: Hugging Face GPT-2 checkpoints load with the same logits as
transformers' GPT2LMHeadModel, and what we write loads back into it."""

import json
import os

import jax
import numpy as np
import pytest

from models.gpt2 import CONFIGS, GPT2, init_params
from models.gpt2_hf import from_huggingface, to_huggingface

pytest.importorskip("safetensors", reason="models.gpt2_hf reads and writes with safetensors")


def _hf_model(tmp_path):
  torch = pytest.importorskip("torch", reason="the HF comparison builds a model with torch")
  transformers = pytest.importorskip(
    "transformers", reason="the HF comparison needs transformers' GPT2LMHeadModel"
  )
  torch.manual_seed(0)
  config = transformers.GPT2Config(
    vocab_size=97, n_positions=24, n_embd=32, n_layer=2, n_head=4, bos_token_id=96, eos_token_id=96
  )
  model = transformers.GPT2LMHeadModel(config).eval()
  with torch.no_grad():  # LayerNorms and biases away from 1 and 0, so every tensor matters
    for p in model.parameters():
      p.add_(0.1 * torch.randn_like(p))
  model.save_pretrained(tmp_path / "hf")
  return torch, transformers, model


def _hf_logits(torch, model, tokens):
  with torch.no_grad():
    return model(torch.tensor(np.asarray(tokens), dtype=torch.long)).logits.numpy()


def test_from_huggingface_matches_transformers_logits(tmp_path):
  torch, _, hf_model = _hf_model(tmp_path)
  model, params = from_huggingface(str(tmp_path / "hf"))
  assert (
    model.config.vocab_size,
    model.config.block_size,
    model.config.n_layer,
    model.config.n_head,
    model.config.d_model,
  ) == (97, 24, 2, 4, 32)
  tokens = np.random.default_rng(0).integers(0, 97, (2, 24))
  ours = jax.jit(model.apply)({"params": params}, tokens)
  np.testing.assert_allclose(ours, _hf_logits(torch, hf_model, tokens), atol=1e-4, rtol=1e-4)


def test_to_huggingface_round_trip_through_transformers(tmp_path):
  torch, transformers, _ = _hf_model(tmp_path)
  model, params = from_huggingface(str(tmp_path / "hf"))
  to_huggingface(params, model.config, str(tmp_path / "ours"))
  reloaded = transformers.GPT2LMHeadModel.from_pretrained(str(tmp_path / "ours")).eval()
  tokens = np.random.default_rng(1).integers(0, 97, (3, 17))
  np.testing.assert_allclose(
    _hf_logits(torch, reloaded, tokens),
    jax.jit(model.apply)({"params": params}, tokens),
    atol=1e-4,
    rtol=1e-4,
  )


def test_round_trip_without_transformers(tmp_path):
  model = GPT2(CONFIGS["tiny"])
  params = jax.jit(init_params, static_argnums=0)(model, jax.random.PRNGKey(0))
  to_huggingface(params, model.config, str(tmp_path))
  with open(tmp_path / "config.json") as f:
    assert json.load(f)["n_embd"] == 64
  loaded_model, loaded = from_huggingface(str(tmp_path))
  assert loaded_model.config.n_layer == 2 and loaded_model.config.vocab_size == 256
  jax.tree.map(np.testing.assert_array_equal, loaded, jax.tree.map(np.asarray, params))


def test_missing_inputs_fail_clearly(tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    from_huggingface(str(tmp_path / "nope"))
  with pytest.raises(FileNotFoundError, match="No config.json"):
    from_huggingface(str(tmp_path))
  (tmp_path / "config.json").write_text(
    json.dumps(
      {
        "model_type": "gpt2",
        "vocab_size": 10,
        "n_positions": 8,
        "n_embd": 8,
        "n_layer": 1,
        "n_head": 2,
      }
    )
  )
  (tmp_path / "pytorch_model.bin").write_bytes(b"")
  with pytest.raises(FileNotFoundError, match="No model.safetensors.*safe_serialization"):
    from_huggingface(str(tmp_path))
  os.remove(tmp_path / "pytorch_model.bin")
  (tmp_path / "config.json").write_text(
    json.dumps(
      {
        "model_type": "gpt2",
        "vocab_size": 10,
        "n_positions": 8,
        "n_embd": 8,
        "n_layer": 1,
        "n_head": 2,
        "activation_function": "relu",
      }
    )
  )
  with pytest.raises(ValueError, match="activation_function"):
    from_huggingface(str(tmp_path))


def _saved_tiny(path):
  model = GPT2(CONFIGS["tiny"])
  params = jax.jit(init_params, static_argnums=0)(model, jax.random.PRNGKey(0))
  to_huggingface(params, model.config, str(path))
  return json.loads((path / "config.json").read_text())


def _edit_config(path, **changes):
  config = json.loads((path / "config.json").read_text())
  (path / "config.json").write_text(json.dumps({**config, **changes}))


# (what breaks the checkpoint, the one line's words): each names the file and the problem.
BROKEN_CHECKPOINTS = [
  ("truncated_weights", r"model.safetensors is not a readable safetensors file.*truncated"),
  ("garbage_weights", r"model.safetensors is not a readable safetensors file"),
  ("config_not_json", r"config.json is not valid JSON"),
  ("config_a_list", r"config.json holds a list"),
  ("config_missing_field", r"lacks the GPT-2 fields \['n_embd'\]"),
  ("config_wider", r"has shape \(256, 64\) but its config.json implies \(256, 128\)"),
  ("config_more_layers", r"lacks \d+ GPT-2 tensors"),
  ("config_bad_heads", r"n_embd=64 is not divisible by n_head=5"),
  ("config_zero_layers", r"non-positive or non-integer \[\('n_layer', 0\)\]"),
]


@pytest.mark.parametrize("case,words", BROKEN_CHECKPOINTS)
def test_broken_checkpoints_fail_in_one_line_naming_the_file(tmp_path, case, words):
  _saved_tiny(tmp_path)
  weights = tmp_path / "model.safetensors"
  if case == "truncated_weights":
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
  elif case == "garbage_weights":
    weights.write_bytes(b"\x07" * 64)
  elif case == "config_not_json":
    (tmp_path / "config.json").write_text('{"n_embd": 64,')
  elif case == "config_a_list":
    (tmp_path / "config.json").write_text("[1, 2]")
  elif case == "config_missing_field":
    config = json.loads((tmp_path / "config.json").read_text())
    del config["n_embd"]
    (tmp_path / "config.json").write_text(json.dumps(config))
  else:
    changes = {
      "config_wider": {"n_embd": 128},
      "config_more_layers": {"n_layer": 3},
      "config_bad_heads": {"n_head": 5},
      "config_zero_layers": {"n_layer": 0},
    }[case]
    _edit_config(tmp_path, **changes)
  with pytest.raises(ValueError, match=words) as info:
    from_huggingface(str(tmp_path))
  assert "\n" not in str(info.value) and str(tmp_path) in str(info.value)
