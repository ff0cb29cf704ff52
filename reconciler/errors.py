"""The one exception root of reconciler.

Branches say what the caller should do::

    ReconcilerError
    ├── SpecInvalid         terminal: the manifests are wrong; fix the commit (carries diagnostics)
    ├── SourceUnavailable   retry later: git, a file or an agent could not be read
    └── PlanInfeasible      the desired state cannot be placed (carries the causes)

Third-party errors are translated where they are caught (``raise ... from exc``);
nothing above a boundary sees foreign exception types.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

# Characters that would break "one problem, one line" (user keys and values reach messages),
# and lone surrogates: a file name that is not UTF-8 carries them, and a strict UTF-8
# stdout cannot print them.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def one_line(text: str) -> str:
    """``text`` with line breaks, other control characters and lone surrogates written as escapes."""
    return _UNPRINTABLE.sub(lambda m: repr(m.group())[1:-1], text)


@dataclass(frozen=True, order=True)
class Diagnostic:
    """One problem found in the manifests, located at ``path:line:col`` (1-based)."""

    path: str
    line: int
    col: int
    resource: str | None = None
    field: str | None = None
    message: str = ""

    def __str__(self) -> str:
        parts = [f"{self.path}:{self.line}:{self.col}"]
        if self.resource is not None:
            parts.append(self.resource)
            parts.append(self.field or "-")
        parts.append(self.message)
        return one_line(": ".join(parts))

    def as_dict(self) -> dict[str, object]:
        return {
            "file": self.path,
            "line": self.line,
            "column": self.col,
            "resource": self.resource,
            "field": self.field,
            "message": self.message,
        }


class ReconcilerError(Exception):
    """Root of every error reconciler raises on purpose."""


class SpecInvalid(ReconcilerError):
    def __init__(self, diagnostics: Sequence[Diagnostic]) -> None:
        self.diagnostics = tuple(sorted(diagnostics))
        super().__init__("\n".join(str(d) for d in self.diagnostics))


class SourceUnavailable(ReconcilerError):
    pass


class PlanInfeasible(ReconcilerError):
    def __init__(self, causes: Sequence[str]) -> None:
        self.causes = tuple(causes)
        super().__init__("; ".join(self.causes))
