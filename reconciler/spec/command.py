"""User command templates (`spec.custom.command`), rendered in jinja2's sandbox.

A manifest is untrusted input: `plan` runs in CI on pull requests. So a template
gets jinja2's immutable sandbox, no globals, only the documented variables, and
only the syntax whose cost is bounded by the template's own length: no loops,
macros, calls or multiplication, and a short list of filters. `validate` compiles
the template with this same code, so what validates is what renders.

Each substituted value becomes part of exactly one argv token: the template is
split like a shell command with every `{{ ... }}` replaced by a placeholder first,
and the values go in afterwards. A space or quote in a path never adds arguments.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

VARIABLES = ("port", "model_path", "model_name", "host", "gpus", "worker", "context", "data_dir")
# No filter here can grow its input (replace could, exponentially when chained).
FILTERS = ("default", "d", "lower", "upper", "string", "int", "trim")
MAX_TEMPLATE_CHARS = 4096
MAX_DEPTH = 32  # expressions, conditions and ifs inside each other
# Placeholders use Unicode private-use characters, which a template may not hold itself.
_OPEN, _CLOSE = "\ue000", "\ue001"
_ALLOWED_NODES = (
    nodes.Template,
    nodes.Output,
    nodes.TemplateData,
    nodes.Name,
    nodes.Const,
    nodes.Filter,
    nodes.If,
    nodes.CondExpr,
    nodes.Compare,
    nodes.Operand,
    nodes.And,
    nodes.Or,
    nodes.Not,
    nodes.Concat,
    nodes.Add,
    nodes.Sub,
    nodes.Neg,
    nodes.Pos,
    nodes.Keyword,
    nodes.Test,
)
TESTS = ("defined", "undefined", "none", "number", "string")


class CommandTemplateError(ValueError):
    """The template cannot be used; the message says why, for a file:line diagnostic."""


@dataclass(frozen=True)
class CommandTemplate:
    source: str
    template: jinja2.Template

    def render(self, variables: Mapping[str, Any]) -> list[str]:
        with substitution() as values:
            try:
                text = self.template.render({name: variables[name] for name in VARIABLES})
                tokens = shlex.split(text)
            except jinja2.TemplateError as exc:
                raise CommandTemplateError(f"template error: {exc.message or exc}") from exc
            except ValueError as exc:
                raise CommandTemplateError(f"cannot split the command: {exc}") from exc
        argv = [substitute(token, values) for token in tokens]
        if not argv or not argv[0].strip():
            raise CommandTemplateError("command is empty: it must start with a program")
        return argv


_rendered_values: ContextVar[list[str]] = ContextVar("rendered_values")


@contextmanager
def substitution() -> Iterator[list[str]]:
    """Collect the values that `placeholder` stands in for while a template renders."""
    values: list[str] = []
    token = _rendered_values.set(values)
    try:
        yield values
    finally:
        _rendered_values.reset(token)


def placeholder(value: Any) -> str:
    """jinja2's finalize hook: every `{{ ... }}` output becomes a placeholder for its value."""
    values = _rendered_values.get()
    values.append("" if value is None else str(value))
    return f"{_OPEN}{len(values) - 1}{_CLOSE}"


def substitute(token: str, values: list[str]) -> str:
    """Put the collected values back in place of their placeholders."""
    parts = token.split(_OPEN)
    out = [parts[0]]
    for part in parts[1:]:
        index, _, rest = part.partition(_CLOSE)
        out.append(values[int(index)] + rest)
    return "".join(out)


@lru_cache(maxsize=1)
def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False, finalize=placeholder)
    env.globals.clear()
    env.filters = {name: env.filters[name] for name in FILTERS}
    env.tests = {name: env.tests[name] for name in TESTS}
    return env


def _check_syntax(tree: nodes.Template) -> None:
    for node in tree.find_all(nodes.Node):
        if not isinstance(node, _ALLOWED_NODES):
            raise CommandTemplateError(
                f"template uses {type(node).__name__}; a command template may only substitute variables, "
                "apply the filters " + ", ".join(FILTERS) + " and use if/else"
            )
        if isinstance(node, nodes.Name) and node.ctx == "load" and node.name not in VARIABLES:
            raise CommandTemplateError(f"unknown variable {node.name!r}; known: {', '.join(VARIABLES)}")
        if isinstance(node, nodes.Filter) and node.name not in FILTERS:
            raise CommandTemplateError(f"unknown filter {node.name!r}; allowed: {', '.join(FILTERS)}")
        if isinstance(node, nodes.Test) and node.name not in TESTS:
            raise CommandTemplateError(f"unknown test {node.name!r}; allowed: {', '.join(TESTS)}")


def compile_command(source: str) -> CommandTemplate:
    """Parse and check a user command template; raise CommandTemplateError with a reason."""
    if len(source) > MAX_TEMPLATE_CHARS:
        raise CommandTemplateError(f"command is longer than {MAX_TEMPLATE_CHARS} characters")
    if _OPEN in source or _CLOSE in source:
        raise CommandTemplateError("command holds the reserved characters U+E000 or U+E001")
    env = _environment()
    try:
        tree = env.parse(source)
        _check_depth(tree)
        _check_syntax(tree)
        return CommandTemplate(source=source, template=env.from_string(tree))
    except jinja2.TemplateSyntaxError as exc:
        raise CommandTemplateError(f"template error: {exc.message}") from exc
    except (RecursionError, SyntaxError) as exc:  # jinja2 and Python's compiler recurse: (((( ... or a + a + ...
        raise CommandTemplateError(f"template is nested more than {MAX_DEPTH} levels deep") from exc


def _check_depth(tree: nodes.Template) -> None:
    """Refuse deep nesting before jinja2 compiles it (Python's compiler has its own, lower, limits)."""
    stack: list[tuple[nodes.Node, int]] = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise CommandTemplateError(f"template is nested more than {MAX_DEPTH} levels deep")
        stack.extend((child, depth + 1) for child in node.iter_child_nodes())


SAMPLE_VARIABLES: dict[str, Any] = {
    "port": 40000,
    "model_path": "/models/model.gguf",
    "model_name": "model",
    "host": "0.0.0.0",
    "gpus": "0",
    "worker": "worker",
    "context": 8192,
    "data_dir": "/var/lib/reconciler",
}


def check_command(source: str) -> None:
    """What `validate` runs: compile, then render once with sample values."""
    compile_command(source).render(SAMPLE_VARIABLES)
