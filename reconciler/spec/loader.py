"""Read manifest files into validated resources, every error located at file:line:col.

ruamel.yaml's round-trip loader keeps the position of every key and value; pydantic's
error locations are walked through those nodes to find where a problem sits.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from reconciler.errors import Diagnostic, SpecInvalid
from reconciler.spec.models import API_VERSION, DNS_LABEL, ENV_NAME, KINDS, LABEL_KEY, Resource

MAX_FILE_BYTES = 4 * 1024 * 1024
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
    line, col = node.lc.key(key)
    return line + 1, col + 1


def _value_position(node: Any, key: Any) -> tuple[int, int]:
    if isinstance(node, CommentedMap):
        line, col = node.lc.value(key)
    else:
        line, col = node.lc.item(key)
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


def format_loc(loc: Iterable[str | int]) -> str:
    text = ""
    for element in loc:
        text += f"[{element}]" if isinstance(element, int) else (f".{element}" if text else str(element))
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


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    return yaml


def _yaml_error(path: str, exc: YAMLError) -> Diagnostic:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
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


def read_documents(path: str, raw: bytes) -> tuple[list[Document], list[Diagnostic]]:
    """Parse one file's bytes into documents; a YAML error stops that file only."""
    if len(raw) > MAX_FILE_BYTES:
        return [], [Diagnostic(path, 1, 1, None, None, f"file is larger than {MAX_FILE_BYTES} bytes")]
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
    except (RecursionError, ValueError, TypeError) as exc:
        # ruamel raises these for pathological input (deep nesting, odd tags).
        return [], [Diagnostic(path, 1, 1, None, None, f"invalid YAML: {type(exc).__name__}: {exc}")]
    return documents, []


def read_yaml_file(path: str | Path, what: str) -> list[Document]:
    """Every document of one YAML/JSON file; raises SpecInvalid with file:line:col diagnostics."""
    name = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise SpecInvalid([Diagnostic(name, 1, 1, None, None, f"cannot read {what}: {exc.strerror}")]) from exc
    documents, problems = read_documents(name, raw)
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
    if kind == "string_pattern_mismatch":
        pattern = str((error.get("ctx") or {}).get("pattern", ""))
        if pattern in PATTERN_WORDS:
            return PATTERN_WORDS[pattern]
    message = str(error["msg"])
    return message[0].lower() + message[1:] if message else kind


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
    except RecursionError:
        return None, [document.diagnostic(resource, [], "document is nested too deeply")]
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
