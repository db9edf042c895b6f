"""Builds typed dataclasses from plain YAML data, rejecting unknown keys and wrong types.

The one place where untyped recipe data becomes typed configuration: every error names the
dotted key (``optimizer.lrr``) and what was expected, so a typo never trains silently.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any, Literal, Union

import yaml


class RecipeError(ValueError):
    """A recipe or override is invalid; the message names the key and the section."""


def build(cls: type, data: Any, where: str) -> Any:
    """Create dataclass ``cls`` from a mapping, checking keys and value types.

    Args:
        cls: The dataclass to build.
        data: A mapping from field name to value (``None`` means all defaults).
        where: The dotted section name used in error messages ("" for the top level).

    Returns:
        An instance of ``cls``. Its ``__post_init__`` runs cross-field checks; a ValueError
        raised there is re-raised as a RecipeError that names the section.
    """
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise RecipeError(f"section '{where}' must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    check_keys(data, fields, where)
    kwargs = {name: coerce(hints[name], value, _join(where, name)) for name, value in data.items()}
    missing = [name for name, f in fields.items() if name not in data and _required(f)]
    if missing:
        raise RecipeError(f"missing required key(s) {missing} in section '{where or 'top level'}'")
    try:
        return cls(**kwargs)
    except RecipeError:
        raise
    except ValueError as err:
        message = str(err)
        if where and not message.startswith(where):
            message = f"{where}: {message}"
        raise RecipeError(message) from err


def check_keys(data: dict, fields: dict, where: str) -> None:
    """Raise a RecipeError naming the first key of ``data`` that is not a field."""
    for key in data:
        if key not in fields:
            section = f"section '{where}'" if where else "the top level"
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise RecipeError(
                f"unknown key '{key}' in {section}{hint} (valid keys: {', '.join(fields)})"
            )


def coerce(hint: Any, value: Any, key: str) -> Any:
    """Check ``value`` against the type ``hint`` and convert where YAML is looser (list->tuple)."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return value
    if dataclasses.is_dataclass(hint):
        return build(hint, value, key)
    if origin in (Union, types.UnionType):
        return _coerce_union(typing.get_args(hint), value, key)
    if origin is Literal:
        if value not in typing.get_args(hint):
            raise RecipeError(f"{key}: {value!r} is not one of {list(typing.get_args(hint))}")
        return value
    if origin is tuple:
        return _coerce_tuple(typing.get_args(hint), value, key)
    if origin in (list, dict):
        if not isinstance(value, origin):
            raise RecipeError(f"{key}: expected a {origin.__name__}, got {value!r}")
        return value
    return _coerce_scalar(hint, value, key)


def _coerce_union(options: tuple, value: Any, key: str) -> Any:
    if value is None and type(None) in options:
        return None
    errors = []
    for option in options:
        if option is type(None):
            continue
        try:
            return coerce(option, value, key)
        except RecipeError as err:
            errors.append(str(err).removeprefix(f"{key}: "))
    raise RecipeError(f"{key}: {value!r} fits none of: {'; '.join(errors)}")


def _coerce_tuple(args: tuple, value: Any, key: str) -> tuple:
    if not isinstance(value, list | tuple):
        raise RecipeError(f"{key}: expected a list, got {value!r}")
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(coerce(args[0], v, f"{key}[{i}]") for i, v in enumerate(value))
    if len(value) != len(args):
        raise RecipeError(f"{key}: expected {len(args)} values, got {len(value)} ({value!r})")
    pairs = enumerate(zip(args, value, strict=True))
    return tuple(coerce(a, v, f"{key}[{i}]") for i, (a, v) in pairs)


def _coerce_scalar(hint: type, value: Any, key: str) -> Any:
    # YAML reads 1e-4 without a dot as a string and 3 as an int; a float field takes both.
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    # run_name=2024 or data.path=123 mean the text; a number where a time is due still fails later
    if hint is str and isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    if hint is int and isinstance(value, bool):
        raise RecipeError(f"{key}: expected int, got {value!r}")
    if isinstance(hint, type) and isinstance(value, hint):
        return value
    name = getattr(hint, "__name__", str(hint))
    raise RecipeError(f"{key}: expected {name}, got {value!r} ({type(value).__name__})")


def apply_override(data: dict, override: str) -> None:
    """Apply one ``section.key=value`` override to raw recipe data, in place.

    The value is parsed as YAML (``3`` is an int, ``1e-4`` a float, ``null`` None,
    ``[1, 2]`` a list). Unknown keys are left for :func:`build` to reject by name.

    Args:
        data: The raw recipe mapping.
        override: ``dotted.key=value``.
    """
    path, sep, text = override.partition("=")
    if not sep or not path.strip():
        raise RecipeError(f"override {override!r} is not of the form section.key=value")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError as err:
        raise RecipeError(f"override {override!r}: the value is not valid YAML "
                          f"({str(err).splitlines()[0]})") from err
    parts = path.strip().split(".")
    node = data
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            section = ".".join(parts[: i + 1])
            raise RecipeError(f"override {override!r}: '{section}' is not a section")
        node = child
    node[parts[-1]] = value


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
