"""configs/common.py: variants parse to their defaults' types and pack back."""

import pytest

from configs.common import pack_arg, parse_arg


def test_pack_arg_is_the_inverse_of_parse_arg():
  defaults = dict(optimizer="adamw", width=256, lr=0.0, runlocal=False)
  packed = pack_arg(optimizer="muon", width=16, lr=0.02, runlocal=True)
  assert packed == "optimizer=muon,width=16,lr=0.02,runlocal=True"
  parsed = parse_arg(packed, **defaults)
  assert dict(parsed) == dict(optimizer="muon", width=16, lr=0.02, runlocal=True)
  assert isinstance(parsed.width, int) and isinstance(parsed.lr, float)


def test_pack_arg_refuses_separators_and_parse_arg_unknown_keys():
  with pytest.raises(ValueError, match="cannot hold"):
    pack_arg(sources="a,b")
  with pytest.raises(ValueError, match="Unknown config variant 'wdith'"):
    parse_arg("wdith=3", width=1)
  with pytest.raises(ValueError, match="width='x' is not a int"):
    parse_arg("width=x", width=1)
