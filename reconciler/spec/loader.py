"""Read manifest files into validated resources, every error located at file:line:col.

ruamel.yaml's round-trip loader keeps the position of every key and value; pydantic's
error locations are walked through those nodes to find where a problem sits.

Every file is untrusted (``plan`` runs on pull requests), so reading is bounded: the
size is checked before the bytes are read, and the composer counts nodes as aliases
expand them, caps nesting, and refuses self-referencing aliases, custom tags, lone
surrogates and integers outside 64 bits, each at the line and column where it starts.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.composer import Composer
from ruamel.yaml.constructor import ConstructorError, RoundTripConstructor
from ruamel.yaml.error import MarkedYAMLError, StreamMark, YAMLError
from ruamel.yaml.events import AliasEvent, CollectionStartEvent, ScalarEvent
from ruamel.yaml.nodes import CollectionNode, Node, ScalarNode

from reconciler.errors import Diagnostic, SpecInvalid
from reconciler.spec.models import API_VERSION, DNS_LABEL, ENV_NAME, KINDS, LABEL_KEY, Resource
from reconciler.spec.scanner import FastCommentScanner

MAX_FILE_BYTES = 1024 * 1024
# Values per file, every alias counted as the nodes it stands for and every document as one;
# ruamel's pure-Python parser spends about 50 us on each, so these caps keep `validate`
# and `plan` within their 10 s on the largest input they admit (bench/hostile_input.py).
MAX_NODES = 30_000
MAX_TOTAL_NODES = 60_000  # over every file of one `validate`/`plan`
_total_left: ContextVar[list[int] | None] = ContextVar("_total_left", default=None)


@contextmanager
def total_budget() -> Iterator[None]:
    """Count the values of every file read inside the block against MAX_TOTAL_NODES."""
    token = _total_left.set([MAX_TOTAL_NODES])
    try:
        yield
    finally:
        _total_left.reset(token)


MAX_DEPTH = 16
MAX_INT = 2**63 - 1
_PLAIN_TAGS = {f"tag:yaml.org,2002:{name}" for name in ("str", "int", "float", "bool", "null", "seq", "map")}
_SURROGATE = re.compile("[\ud800-\udfff]")
PATTERN_WORDS = {
    DNS_LABEL: "must be a DNS-1123 label: lowercase letters, digits and '-', starting and ending alphanumeric",
    ENV_NAME: "must be an environment variable name: letters, digits and '_', not starting with a digit",
    LABEL_KEY: "must be a label key such as 'zone' or 'gpu.vendor' (optionally prefixed 'example.com/')",
}
MANIFEST_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class Document:
    """One YAML document of a manifest file, with the nodes that know their positions."""

    path: str
    index: int
    node: Any
    line: int
    col: int

    def position(self, loc: Sequence[str | int], at_key: bool = False) -> tuple[int, int, str]:
        """(line, col, display path) of the deepest node of ``loc`` that exists."""
        return locate(self.node, loc, self.line, self.col, at_key)

    def diagnostic(self, resource: str | None, loc: Sequence[str | int], message: str) -> Diagnostic:
        line, col, field = self.position(loc)
        return Diagnostic(self.path, line, col, resource, field or None, message)


@dataclass(frozen=True)
class Loaded:
    """A resource that passed schema validation, with the document it came from."""

    resource: Resource
    document: Document

    @property
    def ref(self) -> str:
        return f"{self.resource.kind}/{self.resource.metadata.name}"


def _key_position(node: CommentedMap, key: Any) -> tuple[int, int]:
    try:
        line, col = node.lc.key(key)
    except KeyError:  # a key a merge (<<) brought in: the mapping itself is the place
        line, col = node.lc.line, node.lc.col
    return line + 1, col + 1


def _value_position(node: Any, key: Any) -> tuple[int, int]:
    try:
        line, col = node.lc.value(key) if isinstance(node, CommentedMap) else node.lc.item(key)
    except KeyError:
        line, col = node.lc.line, node.lc.col
    return line + 1, col + 1


def locate(node: Any, loc: Sequence[str | int], line: int, col: int, at_key: bool = False) -> tuple[int, int, str]:
    """Walk ``loc`` through ruamel nodes as far as it goes.

    Elements that are not in the data (pydantic's union tags such as ``str`` or
    ``list[str]``) are skipped; the last element is kept for display even when
    missing, since that is the field a "required" error names.
    """
    shown: list[str | int] = []
    for depth, element in enumerate(loc):
        last = depth == len(loc) - 1
        if isinstance(node, CommentedMap) and element in node:
            shown.append(element)
            if last and (at_key or isinstance(node.get(element), (CommentedMap, CommentedSeq))):
                line, col = _key_position(node, element)
            else:
                line, col = _value_position(node, element)
            node = node[element]
        elif isinstance(node, CommentedSeq) and isinstance(element, int) and 0 <= element < len(node):
            shown.append(element)
            line, col = _value_position(node, element)
            node = node[element]
        elif last and isinstance(element, str) and isinstance(node, CommentedMap) and _is_field_name(element):
            shown.append(element)
    return line, col, format_loc(shown)


def _is_field_name(element: str) -> bool:
    return element.replace("_", "a").isalnum() and element[:1].isalpha()


_BARE_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_./-]*$")


def format_loc(loc: Iterable[str | int]) -> str:
    """``spec.env.HOME``, ``items[0]``; a key that is empty or odd is quoted: ``labels[""]``."""
    text = ""
    for element in loc:
        if isinstance(element, int):
            text += f"[{element}]"
        elif not _BARE_KEY.match(element):
            text += f"[{json.dumps(element)}]"
        else:
            text += f".{element}" if text else element
    return text


def plain(node: Any) -> Any:
    """ruamel's node types to plain Python, so strict validation sees ordinary values."""
    if isinstance(node, dict):
        return {(k if isinstance(k, str) else str(k)): plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [plain(item) for item in node]
    if isinstance(node, bool) or node is None:
        return node
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    if isinstance(node, str):
        return str(node)
    return node


class LimitExceeded(MarkedYAMLError):
    """Valid YAML that reconciler refuses to load: too big, too deep, self-referencing, ..."""

    def __init__(self, problem: str, mark: StreamMark) -> None:
        super().__init__(problem=problem, problem_mark=mark)


class _BoundedComposer(Composer):
    """ruamel's composer, counting every node an alias stands for before anything expands it.

    ruamel shares an aliased node, so loading itself stays small; it is ``plain()`` and
    validation that would walk 9^8 copies. Counting here stops a bomb at its first alias
    past the cap, and a still-open anchor (no end mark yet) is a cycle.
    """

    def __init__(self, loader: Any = None) -> None:
        super().__init__(loader)
        self.nodes = 0
        self.sizes: dict[int, int] = {}

    def compose_document(self) -> Any:
        self.sizes = {}
        self._count(1, self.parser.peek_event().start_mark)
        return super().compose_document()

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.parser.peek_event()
        if isinstance(event, AliasEvent):
            target = self.anchors.get(event.anchor)
            if isinstance(target, CollectionNode) and target.end_mark is None:
                raise LimitExceeded(f"alias *{event.anchor} refers to a node that contains it", event.start_mark)
            if target is not None:
                self._count(self.sizes[id(target)], event.start_mark)
            return super().compose_node(parent, index)
        if self.depth >= MAX_DEPTH:
            raise LimitExceeded(f"nested deeper than {MAX_DEPTH} levels", event.start_mark)
        self._check(event)
        self._count(1, event.start_mark)
        before = self.nodes
        node: Node = super().compose_node(parent, index)
        if node.anchor is not None:
            self.sizes[id(node)] = self.nodes - before + 1
        return node

    def _count(self, nodes: int, mark: StreamMark) -> None:
        self.nodes += nodes
        if self.nodes > MAX_NODES:
            raise LimitExceeded(
                f"more than {MAX_NODES} values in one file (documents count, aliases count as what they repeat)", mark
            )
        total = _total_left.get()
        if total is not None:
            total[0] -= nodes
            if total[0] < 0:
                raise LimitExceeded(f"more than {MAX_TOTAL_NODES} values in all the files together", mark)

    @staticmethod
    def _check(event: ScalarEvent | CollectionStartEvent) -> None:
        tag = event.tag  # explicit tags only: implicit ones are resolved to the plain set
        if tag is not None and tag != "!" and tag not in _PLAIN_TAGS:
            raise LimitExceeded(f"tag {tag} is not supported: write a plain value", event.start_mark)
        if isinstance(event, ScalarEvent) and (bad := _SURROGATE.search(event.value)):
            raise LimitExceeded(
                f"lone surrogate \\u{ord(bad.group()):04x} is not text: escape a whole character", event.start_mark
            )


# What ruamel's constructors raise on a value they cannot read (2001-13-45, !!float x,
# !!bool maybe, !!int ""): the input's fault, so a diagnostic, never a crash.
_CONSTRUCTOR_FAILURES = (ValueError, TypeError, OverflowError, KeyError, IndexError, AttributeError)


class _BoundedConstructor(RoundTripConstructor):
    def construct_object(self, node: Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except _CONSTRUCTOR_FAILURES as exc:
            value = f"{node.value!r} " if isinstance(node, ScalarNode) else "this value "
            reason = "" if isinstance(exc, (KeyError, IndexError, AttributeError)) else f": {exc}"
            raise ConstructorError(
                problem=f"cannot read {value}as {_tag_name(node)}{reason}", problem_mark=node.start_mark
            ) from exc

    @staticmethod
    def _scalar(node: Node) -> ScalarNode:
        if not isinstance(node, ScalarNode):
            raise ConstructorError(
                problem=f"{_tag_name(node)} needs a single value, not a list or mapping", problem_mark=node.start_mark
            )
        return node

    def construct_bounded_int(self, node: Node) -> Any:
        scalar = self._scalar(node)
        # Counting digits first spares converting thousands of them (quadratic in Python).
        value = None if sum(c.isdigit() for c in scalar.value) > 64 else self.construct_yaml_int(scalar)
        if value is None or not -MAX_INT - 1 <= value <= MAX_INT:
            raise ConstructorError(problem="integer out of range (64 bits at most)", problem_mark=node.start_mark)
        return value

    def construct_plain_str(self, node: Node) -> str:
        """A string, ``!!str`` ones included (ruamel would wrap those in a TaggedScalar)."""
        return str(self.construct_scalar(self._scalar(node)))


def _tag_name(node: Node) -> str:
    tag = str(node.tag or "")
    return "!!" + tag.rsplit(":", 1)[-1] if tag.startswith("tag:yaml.org,2002:") else tag or "a value"


_BoundedConstructor.add_constructor("tag:yaml.org,2002:int", _BoundedConstructor.construct_bounded_int)
_BoundedConstructor.add_constructor("tag:yaml.org,2002:str", _BoundedConstructor.construct_plain_str)
for _name in ("bool", "float", "null"):
    _BoundedConstructor.add_constructor(
        f"tag:yaml.org,2002:{_name}",
        lambda self, node, base=RoundTripConstructor.yaml_constructors[f"tag:yaml.org,2002:{_name}"]: base(
            self, self._scalar(node)
        ),
    )


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    yaml.Scanner = FastCommentScanner
    yaml.Composer = _BoundedComposer
    yaml.Constructor = _BoundedConstructor
    return yaml


def _yaml_error(path: str, exc: YAMLError) -> Diagnostic:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
    if isinstance(exc, (LimitExceeded, ConstructorError)) and exc.problem:
        return Diagnostic(path, line, col, None, None, str(exc.problem))
    if isinstance(exc, MarkedYAMLError):
        parts = [exc.context, exc.problem]
        message = "; ".join(str(p).strip() for p in parts if p)
    else:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return Diagnostic(path, line, col, None, None, f"invalid YAML: {message}")


def _decode(path: str, raw: bytes) -> tuple[str | None, Diagnostic | None]:
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        before = raw[: exc.start]
        line = before.count(b"\n") + 1
        col = exc.start - (before.rfind(b"\n") + 1) + 1
        return None, Diagnostic(
            path, line, col, None, None, f"not UTF-8: byte 0x{raw[exc.start]:02x} cannot be decoded"
        )


def read_file(path: str | Path, what: str) -> bytes | Diagnostic:
    """A file's bytes, never more than :data:`MAX_FILE_BYTES` of them read."""
    name = str(path)
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)  # a FIFO or /dev/zero has no honest size
    except OSError as exc:
        return Diagnostic(name, 1, 1, None, None, f"cannot read {what}: {exc.strerror or exc}")
    if len(raw) > MAX_FILE_BYTES:
        return Diagnostic(name, 1, 1, None, None, f"{what} is larger than {MAX_FILE_BYTES} bytes, the limit")
    return raw


def read_documents(path: str, raw: bytes) -> tuple[list[Document], list[Diagnostic]]:
    """Parse one file's bytes into documents; a YAML error stops that file only."""
    text, problem = _decode(path, raw)
    if text is None:
        return [], [problem] if problem else []
    documents: list[Document] = []
    try:
        for index, node in enumerate(_yaml().load_all(text)):
            if node is None:
                continue
            line, col = (node.lc.line + 1, node.lc.col + 1) if hasattr(node, "lc") else (1, 1)
            documents.append(Document(path, index, node, line, col))
    except YAMLError as exc:
        return [], [_yaml_error(path, exc)]
    except AssertionError as exc:  # ruamel asserts on some directives (%YAML 1.3)
        line = next((n for n, text in enumerate(text.splitlines(), 1) if text.startswith("%")), 1)
        return [], [Diagnostic(path, line, 1, None, None, f"invalid YAML: {exc}")]
    return documents, []


def read_yaml_file(path: str | Path, what: str) -> list[Document]:
    """Every document of one YAML/JSON file; raises SpecInvalid with file:line:col diagnostics."""
    raw = read_file(path, what)
    if isinstance(raw, Diagnostic):
        raise SpecInvalid([raw])
    documents, problems = read_documents(str(path), raw)
    if problems:
        raise SpecInvalid(problems)
    return documents


def _resource_name(document: Document) -> str:
    node = document.node
    kind = node.get("kind") if isinstance(node, CommentedMap) else None
    metadata = node.get("metadata") if isinstance(node, CommentedMap) else None
    name = metadata.get("name") if isinstance(metadata, CommentedMap) else None
    kind_text = kind if isinstance(kind, str) and kind in KINDS else "document"
    name_text = name if isinstance(name, str) and name else f"#{document.index + 1}"
    return f"{kind_text}/{name_text}"


_YAML_TYPES = {"str": "string", "int": "number", "float": "number", "bool": "boolean", "list": "list"}


def _message(error: Mapping[str, Any], allowed: Sequence[str]) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        key = str(error["loc"][-1]) if error["loc"] else ""
        close = difflib.get_close_matches(key, allowed, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"unknown field{hint} (allowed: {', '.join(allowed)})"
    if kind == "missing":
        return "required field is missing"
    if kind in ("model_type", "model_attributes_type", "dict_type"):  # pydantic names its classes here
        given = error.get("input")
        what = "nothing" if given is None else f"a {_YAML_TYPES.get(type(given).__name__, type(given).__name__)}"
        return f"expected a mapping of fields (key: value), got {what}"
    if kind == "value_error":
        return value_error_message(error)
    if kind == "string_pattern_mismatch":
        pattern = str((error.get("ctx") or {}).get("pattern", ""))
        if pattern in PATTERN_WORDS:
            return PATTERN_WORDS[pattern]
    message = str(error["msg"])
    return message[0].lower() + message[1:] if message else kind


def value_error_message(error: Mapping[str, Any]) -> str:
    """A validator's own words, without pydantic's "Value error, " in front."""
    cause = (error.get("ctx") or {}).get("error")
    return str(cause) if cause is not None else str(error["msg"])


def _allowed_keys(model: type, loc: Sequence[str | int]) -> list[str]:
    """camelCase keys the model accepts at the parent of ``loc``."""
    current: Any = model
    for element in loc[:-1]:
        fields = getattr(current, "model_fields", None)
        if fields is None:
            return []
        match = next((f for n, f in fields.items() if (f.alias or n) == element), None)
        if match is None:
            continue  # a list index or a union tag
        current = _model_in(match.annotation)
    fields = getattr(current, "model_fields", None) or {}
    return [f.alias or n for n, f in fields.items()]


def _model_in(annotation: Any) -> Any:
    """The pydantic model inside ``X | None``, ``list[X]`` or ``dict[K, X]``, if any."""
    if hasattr(annotation, "model_fields"):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def validate_document(document: Document) -> tuple[Loaded | None, list[Diagnostic]]:
    """Schema-validate one document; errors carry the position of the offending node."""
    node = document.node
    resource = _resource_name(document)
    if not isinstance(node, CommentedMap):
        return None, [
            Diagnostic(
                document.path,
                document.line,
                document.col,
                resource,
                None,
                "a manifest must be a mapping with apiVersion, kind, metadata and spec",
            )
        ]
    problems: list[Diagnostic] = []
    if node.get("apiVersion") != API_VERSION:
        message = "required field is missing" if "apiVersion" not in node else f"must be {API_VERSION!r}"
        problems.append(document.diagnostic(resource, ["apiVersion"], message))
    kind = node.get("kind")
    if not isinstance(kind, str) or kind not in KINDS:
        message = "required field is missing" if "kind" not in node else "unknown kind"
        problems.append(document.diagnostic(resource, ["kind"], f"{message} (one of: {', '.join(KINDS)})"))
        return None, problems
    if problems:
        return None, problems
    model = KINDS[kind]
    try:
        value = model.model_validate(plain(node))
    except ValidationError as exc:
        # A union field fails once per member at the same place: say it once, joined by "or".
        merged: dict[tuple[int, int, str], list[str]] = {}
        for error in exc.errors():
            loc = error["loc"]
            message = _message(error, _allowed_keys(model, loc) if error["type"] == "extra_forbidden" else [])
            line, col, field = document.position(loc, at_key=error["type"] == "extra_forbidden")
            messages = merged.setdefault((line, col, field), [])
            if message not in messages:
                messages.append(message)
        for (line, col, field), messages in merged.items():
            problems.append(Diagnostic(document.path, line, col, resource, field or None, " or ".join(messages)))
        return None, problems
    return Loaded(value, document), []


def manifest_files(path: Path) -> Iterator[Path]:
    """The manifest files under ``path``: the file itself, or ``*.yaml``/``*.yml`` recursively."""
    if path.is_file():
        yield path
        return
    for child in sorted(path.rglob("*")):
        if (
            child.is_file()
            and child.suffix in MANIFEST_SUFFIXES
            and not any(part.startswith(".") for part in child.relative_to(path).parts)
        ):
            yield child
