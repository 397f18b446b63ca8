"""Safe YAML loading with line numbers and without aliases.

Anchors and aliases are refused outright: they are the lever of "billion laughs"
style blow-ups and nothing in an inventory or scenario needs them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from chainlab.errors import InputError, Problem
from chainlab.files import read_regular_file

MAX_BYTES = 1_000_000
MAX_DEPTH = 64

KeyPath = tuple[str | int, ...]


def _norm(key_path: KeyPath) -> tuple[str, ...]:
    # Mapping keys come back from validation as the parsed values (`8080`, `True`) and
    # sequence indexes as ints; the line map stores every part as text.
    return tuple(str(part) for part in key_path)


class _NoAliasLoader(yaml.SafeLoader):
    _depth = 0

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        # SafeLoader's scalar constructors raise plain ValueError/IndexError/... on bad
        # scalars (`2020-99-99`, `!!int 0x`, `!!int ""`, `!!float abc`): make them located YAML errors.
        try:
            return super().construct_object(node, deep)
        except yaml.YAMLError:
            raise
        except (ValueError, TypeError, OverflowError, IndexError, KeyError, AttributeError) as exc:
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read value {node.value!r}: {exc}", node.start_mark
            ) from None

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        # PyYAML keeps the last of repeated keys; two `master:` under `hosts:` is a mistake.
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                repeated = key in seen
                seen.add(key)
            except TypeError:  # unhashable: the base class reports it
                continue
            if repeated:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key `{key_node.value}`", key_node.start_mark
                )
        return super().construct_mapping(node, deep)

    def compose_node(self, parent: Any, index: Any) -> Any:
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
        if self._depth >= MAX_DEPTH:
            raise yaml.composer.ComposerError(
                None, None, f"nested deeper than {MAX_DEPTH} levels", event.start_mark
            )
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _line_map(node: yaml.Node, path: tuple[str, ...], out: dict[tuple[str, ...], int]) -> None:
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            k = key.value if isinstance(key, yaml.ScalarNode) else str(key)
            _line_map(value, path + (k,), out)
            out[path + (k,)] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_map(item, path + (str(i),), out)


class YamlDocument:
    """Parsed YAML data plus a map from key path to source line."""

    def __init__(self, path: Path, data: Any, lines: dict[tuple[str, ...], int]):
        self.path = path
        self.data = data
        self.lines = lines

    def line_of(self, key_path: KeyPath) -> int | None:
        """Line of the deepest known prefix of `key_path`."""
        parts = _norm(key_path)
        for cut in range(len(parts), -1, -1):
            line = self.lines.get(parts[:cut])
            if line is not None:
                return line
        return None


def load_yaml(path: Path) -> YamlDocument:
    """Load one YAML document from a regular file of at most MAX_BYTES; every failure is
    an InputError naming file and line."""
    raw = read_regular_file(path, MAX_BYTES)
    loader = None
    try:
        loader = _NoAliasLoader(raw.decode("utf-8", errors="replace"))
        node = loader.get_single_node()
        if node is None:
            raise InputError([Problem(str(path), "", "file is empty")])
        data = loader.construct_document(node)
    except yaml.reader.ReaderError as exc:
        text = raw.decode("utf-8", errors="replace")
        line = text.count("\n", 0, exc.position) + 1
        what = f"character #x{exc.character:04x}" if isinstance(exc.character, int) else "bytes"
        raise InputError(
            [Problem(str(path), "", f"invalid YAML: unacceptable {what} ({exc.reason})", line)]
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context", None)
        if context:
            problem = f"{context}, {problem}"
        raise InputError([Problem(str(path), "", f"invalid YAML: {problem}",
                                  mark.line + 1 if mark is not None else None)]) from None
    except RecursionError:
        raise InputError([Problem(str(path), "", "invalid YAML: nested too deeply")]) from None
    finally:
        if loader is not None:
            loader.dispose()
    lines: dict[tuple[str, ...], int] = {}
    _line_map(node, (), lines)
    return YamlDocument(path, data, lines)
