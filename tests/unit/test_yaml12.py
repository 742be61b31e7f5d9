"""aprendiz.yaml12: YAML's 1.2 core schema, where No, on and 01 are the strings they look like."""

from __future__ import annotations

import math

import pytest
import yaml

from aprendiz import yaml12


@pytest.mark.parametrize(("text", "value"), [
    ("No", "No"), ("Yes", "Yes"), ("on", "on"), ("OFF", "OFF"), ("y", "y"),
    ("01", "01"), ("00", "00"), ("0x1F", "0x1F"), ("1_000", "1_000"), ("2001-12-14", "2001-12-14"),
    ("0", 0), ("10", 10), ("-3", -3), ("+4", 4),
    ("1.5", 1.5), (".5", 0.5), ("3.", 3.0), ("1e-3", 0.001), ("2E5", 200000.0), ("-.inf", -math.inf),
    ("true", True), ("False", False), ("TRUE", True),
    ("null", None), ("~", None), ("", None),
])
def test_plain_scalars(text, value):
    assert yaml12.load(f"v: {text}")["v"] == value


def test_quoted_scalars_are_strings_and_nan_is_a_float():
    assert yaml12.load("v: ['true', \"01\", '']") == {"v": ["true", "01", ""]}
    assert math.isnan(yaml12.load("v: .nan")["v"])


def test_only_plain_data_is_built():
    with pytest.raises(yaml.YAMLError):
        yaml12.load("v: !!python/object/apply:os.system ['true']")


def test_pyyaml_itself_is_unchanged():
    """The loader is a subclass: yaml.safe_load elsewhere keeps reading YAML 1.1."""
    yaml12.load("v: No")
    assert yaml.safe_load("v: No") == {"v": False}
