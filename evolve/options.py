"""One validator for every set of options: campaign configs, a task's options, an LLM ensemble entry.

Options are a dataclass whose fields carry their checks in metadata (`meta(help, min=, max=, choices=)`);
`validate` builds one from an untrusted dict. Every failure is one `UserError` line naming the option, what
it must be and what it got; an unknown key gets the closest known key (difflib) and the list of known
ones. Coercion is strict: an int may stand for a float, nothing else changes type.
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any, Callable, Mapping, TypeVar

from evolve.errors import UserError

T = TypeVar("T")
# How a message names option `key`: config keys read `campaign.workers`, task options `task option 'window'`.
Namer = Callable[[str], str]


def meta(help: str, **checks: Any) -> dict[str, Any]:
    """Field metadata: a help line plus optional checks (`min`, `max`, `choices`)."""
    return {"help": help, **checks}


def did_you_mean(key: str, known: list[str]) -> str:
    """` (did you mean 'x'?)` for the closest known key, or ''."""
    close = difflib.get_close_matches(key, known, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def validate(cls: type[T], data: Mapping[str, Any], name: Namer, source: str = "") -> T:
    """An instance of dataclass `cls` from `data`: unknown keys, types, ranges and choices checked, in
    one-line errors (`source: ` first when given). Keys left out keep the dataclass defaults."""
    prefix = f"{source}: " if source else ""
    if not isinstance(data, Mapping):
        raise UserError(f"{prefix}{name('*')} must be a table of keys, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    values = {}
    for key, value in data.items():
        if key not in fields:
            raise UserError(f"{prefix}unknown {name(key)}{did_you_mean(str(key), list(fields))}; "
                            f"known: {', '.join(fields)}")
        values[key] = check(value, hints.get(key, Any), fields[key].metadata, name(key), source)
    return cls(**values)


def check(value: Any, hint: Any, metadata: Mapping[str, Any], name: str, source: str = "") -> Any:
    """`value` coerced to type `hint` and checked against the field's `min`, `max` and `choices`."""
    checked = coerce(value, hint, name, source)
    prefix = f"{source}: " if source else ""
    if "min" in metadata and checked < metadata["min"]:
        raise UserError(f"{prefix}{name} must be >= {metadata['min']}, got {checked!r}")
    if "max" in metadata and checked > metadata["max"]:
        raise UserError(f"{prefix}{name} must be <= {metadata['max']}, got {checked!r}")
    if "choices" in metadata and checked not in metadata["choices"]:
        shown = ", ".join(str(c) if c != "" else "''" for c in metadata["choices"])
        raise UserError(f"{prefix}{name} must be one of {shown}, got {checked!r}")
    return checked


def coerce(value: Any, hint: Any, name: str, source: str = "") -> Any:
    """Return `value` as type `hint` (an int may stand for a float), or raise naming the option."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return coerce(value, arg, name, source)
            except UserError:
                continue
        raise _bad(name, value, " or ".join(_type_name(a) for a in args), source)
    if origin is list:
        if not isinstance(value, list):
            raise _bad(name, value, f"a list of {_type_name(args[0]) if args else 'values'}", source)
        return [coerce(v, args[0] if args else Any, f"{name}[{i}]", source) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise _bad(name, value, "a table", source)
        vtype = args[1] if len(args) == 2 else Any
        return {str(k): coerce(v, vtype, f"{name}.{k}", source) for k, v in value.items()}
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise _bad(name, value, "true or false", source)
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _bad(name, value, "an integer", source)
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _bad(name, value, "a number", source)
    if hint is str:
        if isinstance(value, str):
            return value
        raise _bad(name, value, "a string", source)
    if isinstance(hint, type) and not isinstance(value, hint):
        raise _bad(name, value, _type_name(hint), source)
    return value


def describe(cls: type) -> list[tuple[str, Any, str]]:
    """(name, default, help) of every field of options dataclass `cls`: what a reference lists."""
    rows = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)  # type: ignore[misc]
        rows.append((f.name, default, f.metadata.get("help", "")))
    return rows


def _bad(name: str, value: Any, expected: str, source: str) -> UserError:
    return UserError(f"{source + ': ' if source else ''}{name} must be {expected}, got {value!r}")


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", str(hint))
