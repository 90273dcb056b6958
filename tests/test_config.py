from dataclasses import dataclass, field

import pytest

from sa3core.config import from_dict, read_config_file
from sa3core.errors import Sa3Error


@dataclass
class Inner:
    width: int = 8
    rate: float = 0.5


@dataclass
class Outer:
    name: str = "tiny"
    inner: Inner = field(default_factory=Inner)
    dims: tuple = (1, 2)


def test_overrides_nested_and_defaults_kept():
    config = from_dict(Outer, {"inner": {"width": 16}, "dims": [3, 4]})
    assert config.inner.width == 16 and config.inner.rate == 0.5 and config.dims == (3, 4)


def test_unknown_key_is_named_with_suggestion():
    with pytest.raises(Sa3Error, match=r"unknown key 'widht' in cfg.inner; did you mean 'width'"):
        from_dict(Outer, {"inner": {"widht": 16}}, where="cfg")


def test_wrong_type_is_named():
    with pytest.raises(Sa3Error, match="cfg.inner.width must be a whole number"):
        from_dict(Outer, {"inner": {"width": "big"}}, where="cfg")


def test_yaml_errors_name_the_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("a: 1\nb: [unclosed\n")
    with pytest.raises(Sa3Error, match="line"):
        read_config_file(path)
