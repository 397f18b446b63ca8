"""Turn pydantic validation errors into file/line/key-path problems."""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ValidationError

from chainlab.errors import InputError, Problem
from chainlab.yamlfile import YamlDocument

M = TypeVar("M", bound=BaseModel)


def _dotted(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def validate_document(model: type[M], doc: YamlDocument) -> M:
    """Validate `doc.data` against `model`, raising InputError with every problem found."""
    try:
        return model.model_validate(doc.data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and "[" in p))
            message = err["msg"]
            if err["type"] == "extra_forbidden":
                message = "unknown key (typo?); remove it or check the spelling"
            problems.append(
                Problem(str(doc.path), _dotted(loc), message, doc.line_of(loc))
            )
        raise InputError(problems) from None
