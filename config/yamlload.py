"""Safe YAML loading that remembers where every key and value stands in the file.

Errors in config files must say ``file:line:col``; pydantic reports a path like
``("fit", 0, "points")``, and this module maps such a path back to a position.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from config.errors import ConfigIssue

Path_ = tuple[str | int, ...]


class _Loader(yaml.SafeLoader):
    """The safe loader with YAML 1.2 booleans: only true/false, so a country code ``NO``
    or a key ``on`` stays a string."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


@dataclass
class YamlDoc:
    """A loaded YAML file: plain data plus the positions of its nodes (1-based)."""

    file: str
    data: Any
    lines: list[str]
    values: dict[Path_, tuple[int, int]] = field(default_factory=dict)
    keys: dict[Path_, tuple[int, int]] = field(default_factory=dict)

    def where(self, path: Path_, key: bool = False) -> tuple[int, int]:
        """Position of ``path`` (its key when ``key``), else of the nearest enclosing node."""
        table = self.keys if key else self.values
        probe = tuple(path)
        while probe:
            if probe in table:
                return table[probe]
            if probe in self.values:
                return self.values[probe]
            probe = probe[:-1]
        return self.values.get((), (1, 1))

    def issue(self, path: Path_, message: str, key: bool = False) -> ConfigIssue:
        line, col = self.where(path, key)
        return ConfigIssue(self.file, line, col, message, self.line_text(line))

    def block_scalar(self, line: int, col: int) -> tuple[str, int, int] | None:
        """For a block scalar (``>`` or ``|``) starting at line:col: its lines as written,
        the line of the first one and their indentation; None for any other value."""
        text = self.line_text(line)
        if text is None or text[col - 1 : col] not in (">", "|"):
            return None
        lines: list[str] = []
        indent = None
        for number in range(line + 1, len(self.lines) + 1):
            current = self.lines[number - 1]
            if not current.strip():
                lines.append("")
                continue
            width = len(current) - len(current.lstrip(" "))
            if indent is None:
                indent = width
            if width < indent:
                break
            lines.append(current[indent:])
        if indent is None:
            return None
        return "\n".join(lines).rstrip("\n"), line + 1, indent

    def line_text(self, line: int) -> str | None:
        return self.lines[line - 1] if 0 < line <= len(self.lines) else None


def _start(node: yaml.Node) -> tuple[int, int]:
    line, col = node.start_mark.line + 1, node.start_mark.column + 1
    if isinstance(node, yaml.ScalarNode) and node.style in ("'", '"'):
        col += 1  # point at the text, not the quote
    return line, col


def load_yaml(path: Path, display_name: str | None = None) -> YamlDoc:
    """Load one file with the safe loader; raises :class:`ConfigIssue`-carrying errors."""
    name = display_name or str(path)
    text = path.read_text(encoding="utf-8")
    return load_yaml_text(text, name)


class YamlSyntaxError(Exception):
    def __init__(self, issue: ConfigIssue) -> None:
        super().__init__(str(issue))
        self.issue = issue


def _in_words(exc: yaml.MarkedYAMLError, line: int) -> str:
    """PyYAML's complaint as what to do about it, for the mistakes people make editing by
    hand: an indentation that lines up with nothing, a ``:`` where none may be, a tab, a quote
    or bracket left open. Anything else keeps PyYAML's own words."""
    problem = exc.problem or exc.context or "not YAML"
    opened = exc.context_mark
    at = f"line {opened.line + 1}, column {opened.column + 1}" if opened else "above"
    if problem.startswith("expected <block end>"):
        if "'-'" in problem:
            return (
                f"check the indentation of line {line}: a list item (-) stands among the keys "
                "of a mapping; indent the list under its key"
            )
        return (
            f"check the indentation of line {line}: it lines up with no key above it "
            f"(the block starting at {at}); keys of one mapping start in the same column"
        )
    if problem == "mapping values are not allowed here":
        return (
            f"check line {line} and the one above it: a ':' where no key can start; put a value "
            "holding ': ' in quotes, add the ':' missing after a key above, or indent this line "
            "like its neighbours"
        )
    if "'\\t'" in problem:
        return f"line {line} holds a tab; YAML indents with spaces only"
    if exc.context == "while scanning a quoted scalar":
        return f"the quote opened at {at} is never closed"
    if exc.context in ("while parsing a flow sequence", "while parsing a flow mapping"):
        bracket = "]" if "sequence" in exc.context else "}"
        return f"the bracket opened at {at} is not closed: {problem} (a missing '{bracket}'?)"
    return f"invalid YAML: {problem}"


def load_yaml_text(text: str, name: str) -> YamlDoc:
    lines = text.splitlines()
    doc = YamlDoc(file=name, data=None, lines=lines)
    try:
        root = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        message = _in_words(exc, line)
        raise YamlSyntaxError(ConfigIssue(name, line, col, message, doc.line_text(line))) from None
    if root is None:
        doc.data = None
        return doc
    constructor = _Loader("")
    duplicates: list[ConfigIssue] = []

    def build(node: yaml.Node, path: Path_) -> Any:
        doc.values[path] = _start(node)
        if isinstance(node, yaml.MappingNode):
            result: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = constructor.construct_object(key_node, deep=True)
                if isinstance(key, bool | int | float) or key is None:
                    key = str(key).lower() if isinstance(key, bool) or key is None else key
                child = (*path, key)
                if key in result:
                    line, col = _start(key_node)
                    duplicates.append(
                        ConfigIssue(name, line, col, f"duplicate key '{key}'", doc.line_text(line))
                    )
                doc.keys[child] = _start(key_node)
                result[key] = build(value_node, child)
            return result
        if isinstance(node, yaml.SequenceNode):
            return [build(item, (*path, index)) for index, item in enumerate(node.value)]
        return constructor.construct_object(node, deep=True)

    try:
        doc.data = build(root, ())
    except yaml.constructor.ConstructorError as exc:
        mark = exc.problem_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise YamlSyntaxError(
            ConfigIssue(name, line, col, f"invalid YAML: {exc.problem}", doc.line_text(line))
        ) from None
    if duplicates:
        raise YamlSyntaxError(duplicates[0])
    return doc
