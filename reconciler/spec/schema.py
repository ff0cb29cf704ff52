"""JSON Schema per manifest kind, for editors (yaml-language-server) and other tools."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from reconciler.spec.models import KINDS

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
COMBINED = "manifest.schema.json"


def file_name(kind: str) -> str:
    """``WorkerSelector`` -> ``worker-selector.schema.json``."""
    words = "".join(f"-{c.lower()}" if c.isupper() else c for c in kind).lstrip("-")
    return f"{words}.schema.json"


def kind_schema(kind: str) -> dict[str, Any]:
    schema = KINDS[kind].model_json_schema(by_alias=True, mode="validation")
    schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "metadata"})
    return {"$schema": SCHEMA_DIALECT, "$id": file_name(kind), **schema}


def combined_schema() -> dict[str, Any]:
    """One schema for files that mix kinds: picks the kind's schema by its ``kind`` field."""
    return {
        "$schema": SCHEMA_DIALECT,
        "$id": COMBINED,
        "title": "reconciler manifest",
        "type": "object",
        "required": ["apiVersion", "kind", "metadata"],
        "properties": {"kind": {"enum": list(KINDS)}},
        "allOf": [
            {"if": {"properties": {"kind": {"const": kind}}}, "then": {"$ref": file_name(kind)}} for kind in KINDS
        ],
    }


def render_schemas() -> dict[str, str]:
    """File name -> JSON text, stable byte for byte so the committed copies can be compared."""
    schemas = {file_name(kind): kind_schema(kind) for kind in KINDS}
    schemas[COMBINED] = combined_schema()
    return {name: json.dumps(body, indent=2, sort_keys=True) + "\n" for name, body in schemas.items()}


def write_schemas(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render_schemas().items():
        target = out / name
        target.write_text(text, encoding="utf-8")
        written.append(target)
    return written
