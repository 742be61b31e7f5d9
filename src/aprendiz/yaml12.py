"""YAML read by the 1.2 core schema, as users write it.

PyYAML's ``safe_load`` follows YAML 1.1: ``No``, ``Yes``, ``on`` and ``off`` are booleans, ``01``
is a number, and ``1e-3`` is a string. A training config's labels are the strings in the user's
CSV, so they must stay strings. Here only ``true``/``false`` (any case form YAML 1.2 allows) are
booleans, only ``null``, ``~`` and nothing are null, a number is an integer without a leading zero
(``01`` stays a string) or a float in the 1.2 form (``1e-3`` included); every other plain scalar is the string written.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

# (tag, pattern, the characters a match may start with; "" for the empty scalar)
_RESOLVERS: list[tuple[str, re.Pattern[str], list[str]]] = [
    ("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")),
    ("tag:yaml.org,2002:null", re.compile(r"^(?:~|null|Null|NULL|)$"), [*"~nN", ""]),
    ("tag:yaml.org,2002:int", re.compile(r"^[-+]?(?:0|[1-9][0-9]*)$"), list("-+0123456789")),
    ("tag:yaml.org,2002:float",
     # a dot or an exponent: digits alone are an integer, or (with a leading zero) a string
     re.compile(r"^(?:[-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?|[-+]?[0-9]+[eE][-+]?[0-9]+"
                r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
     list("-+0123456789.")),
]


class _Loader(yaml.SafeLoader):
    """SafeLoader with the 1.2 core schema's implicit types instead of 1.1's."""


_Loader.yaml_implicit_resolvers = {}
for _tag, _pattern, _first in _RESOLVERS:
    _Loader.add_implicit_resolver(_tag, _pattern, _first)


def _bool(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> bool:
    return str(loader.construct_scalar(node)).lower() == "true"


def _float(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> float:
    text = str(loader.construct_scalar(node)).lower()
    return float(text.replace(".inf", "inf").replace(".nan", "nan"))


_Loader.add_constructor("tag:yaml.org,2002:bool", _bool)
_Loader.add_constructor("tag:yaml.org,2002:float", _float)


def load(text: str) -> Any:
    """The document in ``text`` (yaml.YAMLError when it is not YAML)."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506  # a SafeLoader: plain data only
