"""Typed job parameters: each job's parameters are one frozen dataclass (its spec).

`spec_from_params` reads a spec from JobSpec params (typed values, or the strings of
`--param KEY=VALUE`, converted by each field's type) and refuses unknown keys;
`spec_to_params` gives back the fields that differ from their defaults (the form that is
hashed, so every role hashes the same values). A field's `metadata["help"]` describes it
for `privit jobs`. No heavy imports: the command line reads specs before torch loads.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

S = TypeVar("S")


def to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected a boolean, got {value!r}")


def field_converter(field: dataclasses.Field[Any]) -> Callable[[Any], Any]:
    """bool, float, int or str, from the field's annotation (`int | None` -> int)."""
    annotation = str(field.type)
    if "bool" in annotation:
        return to_bool
    if "float" in annotation:
        return float
    if "int" in annotation:
        return int
    return str


def spec_from_params(cls: type[S], params: Mapping[str, Any], job: str) -> S:
    """The spec `cls` from params; an unknown key or a bad value is a ValueError naming it."""
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(params) - set(fields))
    if unknown:
        raise ValueError(f"{job}: unknown parameters {unknown}; known: {sorted(fields)}")
    values: dict[str, Any] = {}
    for name, raw in params.items():
        convert = field_converter(fields[name])
        try:
            values[name] = None if raw is None else convert(raw)
        except (TypeError, ValueError):
            kind = "boolean" if convert is to_bool else convert.__name__
            raise ValueError(f"{job}: {name}={raw!r} is not a valid {kind}") from None
    return cls(**values)


def spec_to_params(spec: Any) -> dict[str, Any]:
    """The fields that differ from their defaults, typed."""
    return {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)
            if getattr(spec, f.name) != f.default}


def describe_fields(cls: type) -> list[str]:
    """One line per parameter: name, type, default, help (for `privit jobs`)."""
    lines = []
    for f in dataclasses.fields(cls):
        kind = str(f.type).replace(" | None", "")
        choices = f.metadata.get("choices")
        if choices:
            kind = "|".join(choices)
        default = "" if f.default is dataclasses.MISSING else f" = {f.default!r}"
        lines.append(f"{f.name} ({kind}){default}: {f.metadata.get('help', '')}".rstrip(": "))
    return lines
