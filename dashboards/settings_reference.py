"""``docs/settings.md``: every setting of :class:`controller.settings.Settings`, walked from the
root, with its type, default, unit (from its description) and environment variable. Written by
``python -m dashboards.generate`` and checked to be current by the tests, like the chart's
schema, so it cannot drift from the code."""

from __future__ import annotations

import enum
import types
import typing
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from controller.settings import Settings

__all__ = ["settings_reference"]

_HEAD = """# Settings reference

Generated from the settings model (`controller/settings.py`) by `python -m dashboards.generate`;
a test fails when it is stale. Settings come from, highest first: the environment
(`DIURNAL_<GROUP>__<FIELD>`; a mapping or a list as JSON), the YAML file given with `--config`,
and these defaults. `diurnal check-config FILE` validates a file and names any bad field;
`docs/diurnal.example.yaml` is a commented example.

A name with `<name>` is a key of your choosing (a provider, a route); `[]` is a list of entries.
"""


def _model(annotation: Any) -> tuple[str, type[BaseModel]] | None:
    """Whether ``annotation`` nests settings: ("", a model), ("<name>", a dict's values) or
    ("[]", a list's entries)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "", annotation
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is dict and len(args) == 2 and isinstance(args[1], type) and issubclass(args[1], BaseModel):
        return ".<name>", args[1]
    if origin in (list, tuple) and args and isinstance(args[0], type) and issubclass(args[0], BaseModel):
        return "[]", args[0]
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _model(inner[0])
    return None


def _type(annotation: Any) -> str:
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        parts = [_type(a) for a in args if a is not type(None)]
        return " \\| ".join(parts) + (" or null" if type(None) in args else "")
    if origin in (list, tuple):
        return f"list of {_type(args[0])}" if args else "list"
    if origin is dict:
        return f"mapping of {_type(args[0])} to {_type(args[1])}" if args else "mapping"
    if annotation is SecretStr:
        return "secret string"
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return " \\| ".join(f"`{m.value}`" for m in annotation)
    name = getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")
    return {"str": "string", "int": "integer", "float": "number", "bool": "boolean", "Path": "path",
            "AwareDatetime": "time with offset (ISO 8601)"}.get(name, name)


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    value = field.default_factory() if field.default_factory is not None else field.default  # type: ignore[call-arg]
    if value is PydanticUndefined:
        return "required"
    if isinstance(value, SecretStr):
        return "unset" if not value.get_secret_value() else "(set)"
    if isinstance(value, BaseModel):
        return "(the group's defaults)"
    if isinstance(value, enum.Enum):
        value = value.value
    if value is None:
        return "unset"
    if value in ({}, []):
        return "empty"
    return f"`{value}`"


def _unit(description: str) -> str:
    for marker in ("Measured in ", "measured in "):
        if marker in description:
            return description.split(marker, 1)[1].rstrip(".").split(".")[0]
    for word in ("A fraction per hour", "A fraction"):
        if word in description:
            return word[2:]
    return ""


def _rows(model: type[BaseModel], prefix: str, env: str | None, out: list[str]) -> None:
    nested: list[tuple[str, str | None, type[BaseModel], str]] = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        var = f"{env}{name.upper()}" if env is not None else None
        inner = _model(field.annotation)
        if inner is not None:
            suffix, sub = inner
            nested.append((path + suffix, (var + "__") if var is not None and not suffix else None, sub,
                           field.description or ""))
            if suffix:  # a mapping or a list: set whole, as JSON, in the environment
                out.append(f"| `{path}` | {'mapping' if suffix.startswith('.') else 'list'} of entries (below) | "
                           f"{_default(field)} | | `{var}` (JSON) | {_cell(field.description or '')} |")
            continue
        out.append(f"| `{path}` | {_type(field.annotation)} | {_default(field)} | {_unit(field.description or '')} | "
                   f"{f'`{var}`' if var else 'in the file only'} | {_cell(field.description or '')} |")
    for path, var, sub, description in nested:
        out.append(f"\n## `{path}`\n")
        if description:
            out.append(_cell(description) + "\n")
        out.append(_TABLE)
        _rows(sub, path + ".", var, out)


_TABLE = "| setting | type | default | unit | environment | what it does |\n|---|---|---|---|---|---|"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def settings_reference() -> str:
    out = [_HEAD, "## Top level\n", _TABLE]
    _rows(Settings, "", "DIURNAL_", out)
    return "\n".join(out) + "\n"
