"""Parsing of command-line values shared by the commands: `key=value` options and `CxHxW` sizes.

`--opt num_classes=10 --opt activation=tanh` becomes `{"num_classes": 10, "activation": "tanh"}`;
values are read as bool (`true`/`false`), int, float, or else left as a string.
"""

from __future__ import annotations

from collections.abc import Iterable

from cnnlab.errors import OptionError

_BOOLEANS = {"true": True, "false": False}


def parse_value(text: str) -> bool | int | float | str:
    """Read `text` as a bool (`true`/`false`, any case), an int, a float, or else a string."""
    if text.lower() in _BOOLEANS:
        return _BOOLEANS[text.lower()]
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_options(pairs: Iterable[str]) -> dict[str, bool | int | float | str]:
    """Turn `key=value` strings into a dict with parsed values; a repeated key is an error."""
    options: dict[str, bool | int | float | str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise OptionError(f"option '{pair}' is not of the form key=value (e.g. num_classes=10)")
        if key in options:
            raise OptionError(f"option '{key}' is given twice")
        options[key] = parse_value(value.strip())
    return options


def parse_input_size(text: str) -> tuple[int, int, int]:
    """Read an input size written `CxHxW` (e.g. `3x224x224`) into `(C, H, W)`."""
    parts = text.lower().replace("×", "x").split("x")
    if len(parts) != 3 or not all(part.strip().isdigit() and int(part) > 0 for part in parts):
        raise OptionError(
            f"input size '{text}' is not of the form CxHxW with positive sides (e.g. 3x224x224)"
        )
    channels, height, width = (int(part) for part in parts)
    return channels, height, width
