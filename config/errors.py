"""Located configuration errors, collected across all files before failing."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ConfigIssue:
    """One error at ``file:line:col`` (1-based), with the offending line for a caret display.
    Line 0 means no position: the error is about an environment variable named by ``file``."""

    file: str
    line: int
    col: int
    message: str
    source_line: str | None = None

    def __str__(self) -> str:
        if self.line == 0:
            return f"{self.file}: {self.message}"
        return f"{self.file}:{self.line}:{self.col}: {self.message}"

    def render(self) -> str:
        """The error, the offending line and a caret under the spot."""
        if not self.source_line:
            return str(self)
        caret = " " * (max(self.col, 1) - 1) + "^"
        return f"{self}\n    {self.source_line.rstrip()}\n    {caret}"


class ConfigErrors(Exception):
    """Every problem found in ``config/``, so marketing ops fix them all in one round."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = sorted(issues, key=lambda i: (i.file, i.line, i.col))
        super().__init__(f"{len(self.issues)} error(s) in config")

    def render(self) -> str:
        return "\n".join(issue.render() for issue in self.issues)
