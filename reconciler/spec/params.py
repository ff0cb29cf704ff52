"""Backend parameters in the three forms users write them.

``"--k=v"``, ``"--k 'v w'"`` (split like a shell, without running one) and argv-style
lists (``["--k", "v"]`` as one item, or ``"--k"`` and ``"v"`` as consecutive items).
All become an ordered tuple of :class:`BackendParameter`.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

_NUMBER = re.compile(r"^-\d+(\.\d+)?([eE][-+]?\d+)?$")


@dataclass(frozen=True)
class BackendParameter:
    """One flag and its value (``None`` for a bare switch such as ``--no-mmap``)."""

    flag: str
    value: str | None = None

    def argv(self) -> list[str]:
        return [self.flag] if self.value is None else [self.flag, self.value]


class ParameterError(ValueError):
    """An item that cannot be read; ``index`` is its position in the list."""

    def __init__(self, index: int, message: str) -> None:
        self.index = index
        super().__init__(message)


def _is_flag(token: str) -> bool:
    return token.startswith("-") and len(token) > 1 and not _NUMBER.match(token)


def _tokens(index: int, item: str | Sequence[str]) -> list[str]:
    if not isinstance(item, str):
        return list(item)
    try:
        return shlex.split(item)
    except ValueError as exc:
        raise ParameterError(index, f"cannot split {item!r}: {exc}") from exc


def parse_backend_parameters(items: Sequence[str | Sequence[str]]) -> tuple[BackendParameter, ...]:
    """Parse ``backendParameters``; raises :class:`ParameterError` on the first bad item."""
    params: list[BackendParameter] = []
    open_flag: BackendParameter | None = None  # a flag that may still take the next token
    for index, item in enumerate(items):
        tokens = _tokens(index, item)
        if not tokens:
            raise ParameterError(index, "empty parameter")
        for token in tokens:
            if _is_flag(token):
                flag, sep, value = token.partition("=")
                if not re.match(r"^--?[A-Za-z0-9][\w.-]*$", flag):
                    raise ParameterError(index, f"{flag!r} is not a valid flag name")
                param = BackendParameter(flag, value if sep else None)
                params.append(param)
                open_flag = None if sep else param
            elif open_flag is not None:
                params[-1] = BackendParameter(open_flag.flag, token)
                open_flag = None
            else:
                raise ParameterError(index, f"value {token!r} has no flag before it")
    return tuple(params)
