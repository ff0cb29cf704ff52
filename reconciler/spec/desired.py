"""Desired state: the validated resources of one manifests tree.

A directory that holds a Cluster manifest is the root of one desired state (as a
``kustomization.yaml`` marks a Kustomize root), so one folder such as ``examples/``
can hold several self-contained setups. Files under no such directory belong to the
path that was given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from reconciler.errors import Diagnostic, SpecInvalid
from reconciler.spec.loader import (
    Document,
    Loaded,
    manifest_files,
    read_documents,
    read_file,
    total_budget,
    validate_document,
)
from reconciler.spec.models import Cluster, Metadata, Model, ModelRoute, WorkerSelector
from reconciler.spec.rules import check

DEFAULT_CLUSTER = Cluster(metadata=Metadata(name="default"))


@dataclass(frozen=True)
class Desired:
    """What one commit asks for: a cluster, its worker selectors and its models (sorted by name)."""

    root: str
    cluster: Cluster = DEFAULT_CLUSTER
    selectors: tuple[WorkerSelector, ...] = ()
    models: tuple[Model, ...] = ()
    routes: tuple[ModelRoute, ...] = ()
    locations: dict[str, Document] = field(default_factory=dict, compare=False, repr=False)

    def selector(self, name: str) -> WorkerSelector | None:
        return next((s for s in self.selectors if s.metadata.name == name), None)

    def model(self, name: str) -> Model | None:
        return next((m for m in self.models if m.metadata.name == name), None)


@dataclass(frozen=True)
class Report:
    """Outcome of validating some paths: every desired state found and every problem."""

    states: tuple[Desired, ...]
    diagnostics: tuple[Diagnostic, ...]
    files: int
    documents: int
    skipped: tuple[str, ...] = ()

    @property
    def valid(self) -> bool:
        return not self.diagnostics


def _desired(root: str, items: Sequence[Loaded]) -> Desired:
    clusters = [i.resource for i in items if isinstance(i.resource, Cluster)]
    selectors = sorted(
        (i.resource for i in items if isinstance(i.resource, WorkerSelector)), key=lambda s: s.metadata.name
    )
    models = sorted((i.resource for i in items if isinstance(i.resource, Model)), key=lambda m: m.metadata.name)
    routes = sorted((i.resource for i in items if isinstance(i.resource, ModelRoute)), key=lambda r: r.metadata.name)
    return Desired(
        root=root,
        cluster=clusters[0] if clusters else DEFAULT_CLUSTER,
        selectors=tuple(selectors),
        models=tuple(models),
        routes=tuple(routes),
        locations={i.ref: i.document for i in items},
    )


def _is_data(documents: Sequence[Document]) -> bool:
    """Snapshots and catalogs are YAML lists; manifests are always mappings."""
    return bool(documents) and all(isinstance(d.node, list) for d in documents)


def _declares_cluster(documents: Sequence[Document]) -> bool:
    return any(getattr(d.node, "get", lambda _k: None)("kind") == "Cluster" for d in documents)


def _root_of(file: Path, roots: Sequence[Path], default: Path) -> Path:
    """The deepest Cluster-holding directory above ``file``, else the given path."""
    owners = [r for r in roots if r == file.parent or r in file.parents]
    return max(owners, key=lambda r: len(r.parts)) if owners else default


def validate_paths(paths: Sequence[str | Path]) -> Report:
    """Load, schema-check and rule-check every manifest under ``paths`` (at most MAX_TOTAL_NODES values in all)."""
    with total_budget():
        return _validate_paths(paths)


def _validate_paths(paths: Sequence[str | Path]) -> Report:
    diagnostics: list[Diagnostic] = []
    states: list[Desired] = []
    file_count = document_count = 0
    skipped: list[str] = []
    for given in map(Path, paths):
        if not given.exists():
            diagnostics.append(Diagnostic(str(given), 1, 1, None, None, "no such file or directory"))
            continue
        parsed: dict[Path, list[Document]] = {}
        for file in manifest_files(given):
            file_count += 1
            raw = read_file(file, "manifest")
            if isinstance(raw, Diagnostic):
                diagnostics.append(raw)
                continue
            documents, problems = read_documents(str(file), raw)
            diagnostics.extend(problems)
            if _is_data(documents) and not given.is_file():
                skipped.append(str(file))
                continue
            parsed[file] = documents
            document_count += len(documents)
        roots = [] if given.is_file() else sorted({f.parent for f, docs in parsed.items() if _declares_cluster(docs)})
        groups: dict[Path, list[Loaded]] = {}
        for file, documents in parsed.items():
            group = groups.setdefault(_root_of(file, roots, given), [])
            for document in documents:
                loaded, problems = validate_document(document)
                diagnostics.extend(problems)
                if loaded is not None:
                    group.append(loaded)
        for root, items in sorted(groups.items()):
            diagnostics.extend(check(items))
            states.append(_desired(str(root), items))
    return Report(
        tuple(states), tuple(sorted(set(diagnostics))), file_count - len(skipped), document_count, tuple(skipped)
    )


def load_desired(path: str | Path) -> Desired:
    """The one desired state under ``path``; raises :class:`SpecInvalid` on any problem."""
    report = validate_paths([path])
    if not report.valid:
        raise SpecInvalid(report.diagnostics)
    if len(report.states) != 1:
        roots = ", ".join(s.root for s in report.states) or "none"
        raise SpecInvalid(
            [
                Diagnostic(
                    str(path),
                    1,
                    1,
                    None,
                    None,
                    f"expected one desired state, found {len(report.states)} ({roots}); "
                    "point at the folder that holds one Cluster manifest",
                )
            ]
        )
    return report.states[0]
