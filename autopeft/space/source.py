"""Safe YAML loading that remembers where every value was written, for errors like::

    my_space.yaml:12:9: decisions[1].methods.lora.rank: unknown option 'rank'; allowed: alpha, dropout, r, rslora

The text is composed into a node tree with PyYAML's ``SafeLoader`` (``yaml.compose``), so only plain
YAML types are ever constructed (no Python object tags); each node's start mark gives the line and
column of the value at a path such as ``("decisions", 1, "methods", "lora", "rank")``.
Duplicate keys, merge keys (``<<``), non-scalar keys, cyclic aliases and documents that expand past
:data:`MAX_NODES` nodes are errors rather than silent surprises.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from autopeft.core.errors import UserError

Path = tuple[Any, ...]
MAX_NODES = 20_000
_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")
_PLAIN_TAGS = ("tag:yaml.org,2002:seq", "tag:yaml.org,2002:map")


def show_path(path: Path) -> str:
    out = ""
    for part in path:
        if isinstance(part, int) and not isinstance(part, bool):
            out += f"[{part}]"
        else:
            text = part if isinstance(part, str) and _PLAIN_KEY.match(part) else repr(part)
            out += f".{text}" if out else text
    return out or "(document)"


@dataclass
class Located:
    """A document's plain data and the source position of each of its values."""

    source: str
    data: Any = None
    marks: dict[Path, tuple[int, int]] = field(default_factory=dict)

    def error(self, path: Path, message: str) -> UserError:
        """A :class:`UserError` naming the file, the line and column of ``path`` (or its nearest parent)."""
        where = path
        while where not in self.marks and where:
            where = where[:-1]
        line, column = self.marks.get(where, (0, 0))
        position = f"{self.source}:{line}:{column}" if line else self.source
        text = f"{show_path(path)}: {message}".replace("\n", "\\n").replace("\r", "\\r")
        return UserError(f"{position}: {text}")  # one line, whatever the document holds


def load_located(text: str, source: str) -> Located:
    located = Located(source)
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            raise UserError(f"{source}: the file is empty; a search space needs 'decisions'")
        walker = _Walker(loader, located)
        located.data = walker.walk(root, ())
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        problem = exc.problem or exc.context or "invalid YAML"
        raise UserError(f"{source}{where}: invalid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{source}: invalid YAML: {str(exc).splitlines()[0]}") from None
    except RecursionError:
        raise UserError(f"{source}: the document is nested too deeply") from None
    finally:
        loader.dispose()
    return located


class _Walker:
    def __init__(self, loader: yaml.SafeLoader, located: Located) -> None:
        self.loader = loader
        self.located = located
        self.visited = 0
        self.stack: set[int] = set()

    def walk(self, node: Node, path: Path) -> Any:
        self.visited += 1
        if self.visited > MAX_NODES:
            raise self.located.error(path, f"the document expands to more than {MAX_NODES} values "
                                           "(aliases repeated too often?)")
        self.located.marks.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))
        if id(node) in self.stack:
            raise self.located.error(path, "an alias refers to itself; cycles are not allowed")
        if isinstance(node, ScalarNode):
            return self.loader.construct_object(node, deep=True)
        if node.tag not in _PLAIN_TAGS:
            raise self.located.error(path, f"YAML tag {node.tag!r} is not allowed; write plain lists and mappings")
        self.stack.add(id(node))
        try:
            if isinstance(node, SequenceNode):
                return [self.walk(item, path + (i,)) for i, item in enumerate(node.value)]
            if isinstance(node, MappingNode):
                return self._mapping(node, path)
            raise self.located.error(path, f"unsupported YAML node {type(node).__name__}")
        finally:
            self.stack.discard(id(node))

    def _mapping(self, node: MappingNode, path: Path) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise self.located.error(path, "merge keys (<<) are not supported; write the keys out")
            if not isinstance(key_node, ScalarNode):
                raise self.located.error(path, "a key must be a plain name, not a list or a mapping")
            key = self.loader.construct_object(key_node)
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                raise self.located.error(path, f"key {key!r} must be a plain name")
            self.located.marks[path + (key,)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            if key in out:
                raise self.located.error(path + (key,), f"duplicate key {key!r}")
            out[key] = self.walk(value_node, path + (key,))
            # the key's position is more useful in messages than its value's (unknown key, bad value)
            self.located.marks[path + (key,)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
        return out
