"""Safe YAML loading with line numbers and without aliases.

Anchors and aliases are refused outright: they are the lever of "billion laughs"
style blow-ups and nothing in an inventory or scenario needs them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from chainlab.errors import InputError, Problem

MAX_BYTES = 1_000_000

KeyPath = tuple[str | int, ...]


class _NoAliasLoader(yaml.SafeLoader):
    def compose_node(self, parent: Any, index: Any) -> Any:  # type: ignore[override]
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, "YAML aliases are not allowed here", event.start_mark
            )
        event = self.peek_event()
        anchor = getattr(event, "anchor", None)
        if anchor is not None:
            raise yaml.composer.ComposerError(
                None, None, "YAML anchors are not allowed here", event.start_mark
            )
        return super().compose_node(parent, index)


def _line_map(node: yaml.Node, path: KeyPath, out: dict[KeyPath, int]) -> None:
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            k = key.value if isinstance(key, yaml.ScalarNode) else str(key)
            _line_map(value, path + (k,), out)
            out[path + (k,)] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_map(item, path + (i,), out)


class YamlDocument:
    """Parsed YAML data plus a map from key path to source line."""

    def __init__(self, path: Path, data: Any, lines: dict[KeyPath, int]):
        self.path = path
        self.data = data
        self.lines = lines

    def line_of(self, key_path: KeyPath) -> int | None:
        """Line of the deepest known prefix of `key_path`."""
        for cut in range(len(key_path), -1, -1):
            line = self.lines.get(tuple(key_path[:cut]))
            if line is not None:
                return line
        return None


def load_yaml(path: Path) -> YamlDocument:
    """Load one YAML document; every failure is an InputError naming file and line."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError([Problem(str(path), "", f"cannot read: {exc.strerror}")]) from None
    if len(raw) > MAX_BYTES:
        raise InputError([Problem(str(path), "", f"file larger than {MAX_BYTES} bytes")])
    loader = _NoAliasLoader(raw.decode("utf-8", errors="replace"))
    try:
        node = loader.get_single_node()
        if node is None:
            raise InputError([Problem(str(path), "", "file is empty")])
        data = loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise InputError([Problem(str(path), "", f"invalid YAML: {problem}", line)]) from None
    finally:
        loader.dispose()
    lines: dict[KeyPath, int] = {}
    _line_map(node, (), lines)
    return YamlDocument(path, data, lines)
