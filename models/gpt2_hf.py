"""Hugging Face GPT-2 checkpoints <-> models.gpt2 parameter pytrees.

    model, params = from_huggingface("/path/to/gpt2")   # config.json + model.safetensors
    to_huggingface(params, model.config, "/path/out")     # loadable by GPT2LMHeadModel

The directory layout is what `transformers`' `save_pretrained` writes. Reading
and writing use `safetensors.numpy` only: neither torch nor transformers is
needed. HF GPT-2 uses Conv1D layers whose weights are already (in, out), which
is flax's kernel layout, so no transposes; LayerNorm `weight` is flax's `scale`.
"""

import json
import os

import numpy as np

from models.gpt2 import GPT2, GPT2Config

_CONFIG_FILE = "config.json"
_WEIGHTS_FILE = "model.safetensors"
_INDEX_FILE = "model.safetensors.index.json"  # sharded checkpoints

# flax leaf name -> HF leaf name, per kind of layer.
_DENSE = {"kernel": "weight", "bias": "bias"}
_NORM = {"scale": "weight", "bias": "bias"}


def _name_map(n_layer: int) -> dict[tuple[str, ...], str]:
  """flax path (tuple) -> HF name without the "transformer." prefix."""
  names = {("wte", "embedding"): "wte.weight", ("wpe", "embedding"): "wpe.weight"}
  names.update({("ln_f", k): f"ln_f.{v}" for k, v in _NORM.items()})
  for i in range(n_layer):
    for ln in ("ln_1", "ln_2"):
      names.update({(f"h_{i}", ln, k): f"h.{i}.{ln}.{v}" for k, v in _NORM.items()})
    for sub, layers in (("attn", ("c_attn", "c_proj")), ("mlp", ("c_fc", "c_proj"))):
      for layer in layers:
        names.update(
          {(f"h_{i}", sub, layer, k): f"h.{i}.{sub}.{layer}.{v}" for k, v in _DENSE.items()}
        )
  return names


_REQUIRED = ("vocab_size", "n_positions", "n_layer", "n_head", "n_embd")


def _config_from_hf(hf: dict, dropout: float, where: str = "config.json") -> GPT2Config:
  missing = [k for k in _REQUIRED if k not in hf]
  if missing:
    raise ValueError(f"{where} lacks the GPT-2 fields {missing}; it is not a GPT-2 config.json.")
  bad = [k for k in _REQUIRED if not (isinstance(hf[k], int) and hf[k] >= 1)]
  if bad:
    raise ValueError(f"{where} has non-positive or non-integer {[(k, hf[k]) for k in bad]}.")
  if hf["n_embd"] % hf["n_head"]:
    raise ValueError(f"{where}: n_embd={hf['n_embd']} is not divisible by n_head={hf['n_head']}.")
  unsupported = []
  if hf.get("activation_function", "gelu_new") not in ("gelu_new", "gelu_pytorch_tanh"):
    unsupported.append(f"activation_function={hf['activation_function']!r} (need gelu_new)")
  if hf.get("n_inner") not in (None, 4 * hf["n_embd"]):
    unsupported.append(f"n_inner={hf['n_inner']} (need 4*n_embd)")
  if not hf.get("scale_attn_weights", True):
    unsupported.append("scale_attn_weights=false")
  if hf.get("scale_attn_by_inverse_layer_idx", False):
    unsupported.append("scale_attn_by_inverse_layer_idx=true")
  if hf.get("add_cross_attention", False):
    unsupported.append("add_cross_attention=true")
  if unsupported:
    raise ValueError(
      "This Hugging Face GPT-2 config differs from GPT-2's architecture, which "
      "models.gpt2 implements exactly: " + "; ".join(unsupported)
    )
  return GPT2Config(
    vocab_size=hf["vocab_size"],
    block_size=hf["n_positions"],
    n_layer=hf["n_layer"],
    n_head=hf["n_head"],
    d_model=hf["n_embd"],
    layer_norm_eps=hf.get("layer_norm_epsilon", 1e-5),
    init_std=hf.get("initializer_range", 0.02),
    dropout=dropout,
  )


def _load_safetensors(file: str) -> dict[str, np.ndarray]:
  """One safetensors file; a truncated or corrupt one is a one-line ValueError."""
  from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top

  if not os.path.isfile(file):
    raise FileNotFoundError(f"Safetensors file {file!r} does not exist (named by the index).")
  try:
    return load_file(file)
  except Exception as e:  # safetensors raises its own SafetensorError, or OSError
    raise ValueError(
      f"{file} is not a readable safetensors file ({' '.join(str(e).split())}); "
      "it is truncated or corrupt: download or save it again."
    ) from None


def _read_json(file: str) -> dict:
  try:
    with open(file) as f:
      data = json.load(f)
  except ValueError as e:
    raise ValueError(f"{file} is not valid JSON ({e}); restore it from the checkpoint.") from None
  if not isinstance(data, dict):
    raise ValueError(f"{file} holds a {type(data).__name__}, not a JSON object.")
  return data


def _read_tensors(path: str) -> dict[str, np.ndarray]:
  single, index = os.path.join(path, _WEIGHTS_FILE), os.path.join(path, _INDEX_FILE)
  if os.path.isfile(single):
    return _load_safetensors(single)
  if os.path.isfile(index):
    weight_map = _read_json(index).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
      raise ValueError(f"{index} has no weight_map of tensor names to shard files.")
    tensors = {}
    for shard in sorted(set(weight_map.values())):
      tensors.update(_load_safetensors(os.path.join(path, shard)))
    return tensors
  present = sorted(os.listdir(path))
  hint = (
    " It holds a PyTorch pickle: re-save it with transformers' "
    "`model.save_pretrained(dir, safe_serialization=True)`."
    if "pytorch_model.bin" in present
    else ""
  )
  raise FileNotFoundError(
    f"No {_WEIGHTS_FILE} (or {_INDEX_FILE}) in {path!r}; it holds {present}.{hint}"
  )


def _expected_shapes(model: GPT2) -> dict[tuple[str, ...], tuple[int, ...]]:
  """flax path -> the shape models.gpt2 gives that leaf (no arrays allocated)."""
  import jax  # pylint: disable=g-import-not-at-top

  from models.gpt2 import init_params  # pylint: disable=g-import-not-at-top

  shapes = jax.eval_shape(lambda: init_params(model, jax.random.PRNGKey(0)))
  return {
    tuple(k.key for k in path): tuple(leaf.shape)
    for path, leaf in jax.tree_util.tree_flatten_with_path(shapes)[0]
  }


def from_huggingface(path: str, dropout: float = 0.0, **config_overrides) -> tuple[GPT2, dict]:
  """Loads a local HF GPT-2 directory; returns (model, params) for model.apply.

  config_overrides go into the GPT2Config (e.g. dtype=jnp.bfloat16, remat=True).
  """
  if not os.path.isdir(path):
    raise FileNotFoundError(
      f"Hugging Face GPT-2 directory {path!r} does not exist; pass a "
      f"directory written by `save_pretrained` ({_CONFIG_FILE} + "
      f"{_WEIGHTS_FILE})."
    )
  config_path = os.path.join(path, _CONFIG_FILE)
  if not os.path.isfile(config_path):
    raise FileNotFoundError(
      f"No {_CONFIG_FILE} in {path!r} (it holds {sorted(os.listdir(path))}); "
      "a Hugging Face checkpoint directory needs it beside the weights."
    )
  hf_config = _read_json(config_path)
  if hf_config.get("model_type", "gpt2") != "gpt2":
    raise ValueError(f"{config_path} describes model_type={hf_config['model_type']!r}, not 'gpt2'.")
  config = _config_from_hf(hf_config, dropout, config_path)
  if config_overrides:
    import dataclasses  # pylint: disable=g-import-not-at-top

    config = dataclasses.replace(config, **config_overrides)
  tensors = _read_tensors(path)
  # GPT2LMHeadModel prefixes "transformer."; a bare GPT2Model does not.
  prefix = "transformer." if any(k.startswith("transformer.") for k in tensors) else ""
  params, missing = {}, []
  for flax_path, hf_name in _name_map(config.n_layer).items():
    name = prefix + hf_name
    if name not in tensors:
      missing.append(name)
      continue
    node = params
    for key in flax_path[:-1]:
      node = node.setdefault(key, {})
    node[flax_path[-1]] = np.asarray(tensors[name], np.float32)
  if missing:
    raise ValueError(f"{path!r} lacks {len(missing)} GPT-2 tensors, e.g. {missing[:3]}.")
  # Every tensor's shape must be what config.json describes, or apply fails later.
  expected = _expected_shapes(GPT2(config))
  for flax_path, hf_name in _name_map(config.n_layer).items():
    node = params
    for key in flax_path:
      node = node[key]
    if tuple(node.shape) != expected[flax_path]:
      raise ValueError(
        f"{path!r}: {prefix + hf_name} has shape {tuple(node.shape)} but its config.json "
        f"implies {expected[flax_path]}; the weights and config.json are from different models."
      )
  head = tensors.get("lm_head.weight")
  if head is not None and not np.array_equal(head, params["wte"]["embedding"]):
    raise ValueError(
      f"{path!r} has an untied lm_head.weight; models.gpt2 ties the head to "
      "wte (as GPT-2 does) and cannot represent it."
    )
  return GPT2(config), params


def to_huggingface(params, config: GPT2Config, path: str) -> None:
  """Writes config.json + model.safetensors that GPT2LMHeadModel.from_pretrained loads."""
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top

  os.makedirs(path, exist_ok=True)
  tensors = {}
  for flax_path, hf_name in _name_map(config.n_layer).items():
    node = params
    for key in flax_path:
      node = node[key]
    tensors["transformer." + hf_name] = np.ascontiguousarray(np.asarray(node, np.float32))
  save_file(tensors, os.path.join(path, _WEIGHTS_FILE), metadata={"format": "pt"})
  hf_config = {
    "architectures": ["GPT2LMHeadModel"],
    "model_type": "gpt2",
    "activation_function": "gelu_new",
    "vocab_size": config.vocab_size,
    "n_positions": config.block_size,
    "n_embd": config.d_model,
    "n_layer": config.n_layer,
    "n_head": config.n_head,
    "n_inner": None,
    "layer_norm_epsilon": config.layer_norm_eps,
    "initializer_range": config.init_std,
    "attn_pdrop": config.dropout,
    "embd_pdrop": config.dropout,
    "resid_pdrop": config.dropout,
    "scale_attn_weights": True,
    "scale_attn_by_inverse_layer_idx": False,
    "reorder_and_upcast_attn": False,
    "tie_word_embeddings": True,
    "dtype": "float32",
    "bos_token_id": config.vocab_size - 1,
    "eos_token_id": config.vocab_size - 1,
  }
  with open(os.path.join(path, _CONFIG_FILE), "w") as f:
    json.dump(hf_config, f, indent=2)
