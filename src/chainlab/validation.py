"""Turn pydantic validation errors into file/line/key-path problems."""

from __future__ import annotations

import difflib
import types
import typing
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from chainlab.errors import InputError, Problem, visible
from chainlab.patterns import PATTERN_HELP
from chainlab.yamlfile import YamlDocument

M = TypeVar("M", bound=BaseModel)


class LocatedValueError(ValueError):
    """A ValueError from a model validator that knows which key (relative to the model) is wrong."""

    def __init__(self, loc: tuple[str | int, ...], message: str):
        super().__init__(message)
        self.loc = loc


def _dotted(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{visible(part)}" if out else visible(part))
    return out


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _clean_loc(loc: tuple[Any, ...], data: Any) -> tuple[str | int, ...]:
    """Drop pydantic's internal loc parts: validator names and discriminated-union tags."""
    out: list[str | int] = []
    for i, part in enumerate(loc):
        is_key = isinstance(data, dict) and part in data
        if not is_key and isinstance(part, str) and "[" in part:
            continue  # `function-after[...]`, `[key]`: pydantic internals, not keys of the file
        if (
            not is_key
            and isinstance(part, str)
            and isinstance(data, dict)
            and part in [v for v in data.values() if isinstance(v, str)]
            and i + 1 < len(loc)
        ):
            continue  # the tag of a discriminated union (`probe.tcp.port` -> `probe.port`)
        out.append(part)
        if isinstance(data, dict):
            data = data.get(part)
        elif isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data):
            data = data[part]
        else:
            data = None
    return tuple(out)


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _models_in(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return []


def _model_at(model: type[BaseModel], loc: tuple[str | int, ...], data: Any) -> type[BaseModel] | None:
    """The model that validates the mapping at `loc`, if it can be told (best effort)."""
    annotation: Any = model
    for part in loc:
        models = _models_in(annotation)
        if models:
            if len(models) > 1:  # a discriminated union: pick by the data's tag
                models = [m for m in models if _tag_matches(m, data)] or models[:1]
            field = models[0].model_fields.get(str(part))
            if field is None:
                return None
            annotation = field.annotation
        else:
            origin = typing.get_origin(annotation)
            if origin is typing.Annotated:
                annotation = typing.get_args(annotation)[0]
                origin = typing.get_origin(annotation)
            if origin is dict:
                annotation = typing.get_args(annotation)[1]
            elif origin is list:
                annotation = typing.get_args(annotation)[0]
            else:
                return None
        data = data.get(part) if isinstance(data, dict) else None
    models = _models_in(annotation)
    if len(models) > 1:
        models = [m for m in models if _tag_matches(m, data)]
    return models[0] if len(models) == 1 else None


def _tag_matches(model: type[BaseModel], data: Any) -> bool:
    if not isinstance(data, dict):
        return False
    for name, field in model.model_fields.items():
        args = typing.get_args(field.annotation)
        if typing.get_origin(field.annotation) is typing.Literal and name in data:
            return data[name] in args
    return False


def _message(model: type[BaseModel], err: Any, loc: tuple[str | int, ...], data: Any) -> str:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if kind == "extra_forbidden":
        message = "unknown key (typo?)"
        parent = _model_at(model, loc[:-1], data)
        if parent is not None and loc:
            allowed = list(parent.model_fields)
            close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            message += f"; did you mean `{close[0]}`?" if close else "."
            message += f" Allowed here: {', '.join(allowed)}"
        else:
            message += "; remove it or check the spelling"
        return message
    if kind == "string_pattern_mismatch":
        expected = PATTERN_HELP.get(ctx.get("pattern", ""), "a value of another form")
        return f"{_short(err.get('input'))} is not valid; expected {expected}"
    if kind == "value_error":
        return str(ctx.get("error") or err["msg"]).removeprefix("Value error, ")
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        got = type(err.get("input")).__name__
        return f"expected a mapping (`key: value` lines), got {_describe(got)}"
    if kind == "union_tag_invalid":
        return f"{ctx.get('discriminator', 'kind')} {ctx.get('tag')!r} is unknown; expected one of {ctx.get('expected_tags')}"
    if kind in ("literal_error", "enum") or kind.endswith(("_type", "_parsing")):
        return f"{err['msg']} (got {_short(err.get('input'))})"
    if kind == "missing":
        return "required key is missing"
    return str(err["msg"])


def _describe(type_name: str) -> str:
    return {"str": "a text value", "list": "a list", "int": "a number", "float": "a number",
            "NoneType": "nothing", "bool": "true/false", "bytes": "binary data"}.get(type_name, type_name)


def validate_document(model: type[M], doc: YamlDocument) -> M:
    """Validate `doc.data` against `model`, raising InputError with every problem found."""
    try:
        return model.model_validate(doc.data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            loc = _clean_loc(tuple(err["loc"]), doc.data)
            error = (err.get("ctx") or {}).get("error")
            if isinstance(error, LocatedValueError):
                loc = loc + tuple(error.loc)
            message = _message(model, err, loc, doc.data)
            problems.append(Problem(str(doc.path), _dotted(loc), message, doc.line_of(loc)))
        raise InputError(problems) from None
