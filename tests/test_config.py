"""Strict config loading: unknown keys, wrong types, overrides, nulls."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from streamseg.config import ConfigError, load_config


@dataclass(frozen=True)
class Inner:
    time_constant_s: float = 0.1
    enabled: bool = True
    size_hw: tuple[int, int] = (32, 32)


@dataclass(frozen=True)
class Outer:
    name: str = "x"
    mode: Literal["a", "b"] = "a"
    limit: int | None = None
    path: Path | None = None
    inner: Inner = field(default_factory=Inner)

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 0:
            raise ValueError(f"limit must be >= 0, got {self.limit}")


def _write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_defaults_and_file_values(tmp_path):
    config = load_config(
        Outer, _write(tmp_path, "name: y\ninner:\n  time_constant_s: 1\n")
    )
    assert config.name == "y"
    assert config.inner.time_constant_s == 1.0 and isinstance(
        config.inner.time_constant_s, float
    )
    assert config.inner.size_hw == (32, 32)


def test_overrides_parse_yaml_values():
    config = load_config(
        Outer, None, ["inner.enabled=false", "inner.size_hw=[64, 96]", "limit=3"]
    )
    assert config.inner.enabled is False
    assert config.inner.size_hw == (64, 96)
    assert config.limit == 3


def test_null_means_not_given(tmp_path):
    assert (
        load_config(Outer, _write(tmp_path, "limit: null\npath: null\n")).limit is None
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nmae: y\n", r"nmae: unknown key; did you mean 'name'\?"),
        (
            "inner:\n  time_constnt_s: 1\n",
            r"inner.time_constnt_s: unknown key; did you mean 'time_constant_s'",
        ),
        ("inner:\n  enabled: 'yes'\n", "inner.enabled: expected true or false"),
        ("limit: 2.5\n", "limit: expected"),
        ("mode: c\n", "mode: expected one of 'a', 'b'"),
        ("inner:\n  size_hw: [1, 2, 3]\n", "expected 2 values"),
        ("limit: -1\n", "limit must be >= 0"),
        ("- a\n- b\n", "expected a mapping at the top level"),
        ("name: [unclosed\n", "not valid YAML"),
    ],
)
def test_errors_name_the_key_and_the_fix(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_config(Outer, _write(tmp_path, text))


def test_bad_override_syntax():
    with pytest.raises(ConfigError, match=r"expected key\.path=value"):
        load_config(Outer, None, ["inner.enabled"])


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(Outer, tmp_path / "nope.yaml")


# --- configs/stream.yaml is the truth about the stream config -------------------

STREAM_YAML = Path(__file__).resolve().parents[1] / "configs" / "stream.yaml"


def test_stream_yaml_names_every_field_of_every_section():
    import dataclasses

    import yaml

    from streamseg.app import StreamConfig

    written = yaml.safe_load(STREAM_YAML.read_text(encoding="utf-8"))
    sections = {f.name: f.type for f in dataclasses.fields(StreamConfig)}
    assert set(written) == set(sections)
    defaults = StreamConfig()
    for name in sections:
        fields = {f.name for f in dataclasses.fields(getattr(defaults, name))}
        keys = set(written[name] or {})
        assert keys == fields, (
            f"{name}: missing {sorted(fields - keys)}, unknown {sorted(keys - fields)}"
        )


def test_stream_yaml_values_are_the_code_defaults():
    from streamseg.app import StreamConfig
    from streamseg.config import to_dict

    loaded = load_config(StreamConfig, STREAM_YAML, [])
    assert to_dict(loaded) == to_dict(StreamConfig())
    assert loaded == StreamConfig()


@pytest.mark.parametrize(
    ("override", "fix"),
    [
        ("smoothing.on_threshold=0.6", "set model.threshold instead"),
        ("smoothing.off_threshold=0.4", "set smoothing.hysteresis_gap instead"),
    ],
)
def test_a_removed_smoothing_threshold_names_its_replacement(override, fix):
    from streamseg.app import StreamConfig

    with pytest.raises(ConfigError, match=f"no longer a setting; .*{fix}"):
        load_config(StreamConfig, None, [override])
