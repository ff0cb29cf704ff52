"""Stage 1: the manifests. Models, loader with file:line:col errors, rules, schemas."""

from reconciler.spec.desired import DEFAULT_CLUSTER, Desired, Report, load_desired, validate_paths
from reconciler.spec.loader import Document, Loaded
from reconciler.spec.models import (
    API_VERSION,
    KINDS,
    Agent,
    Cluster,
    ClusterSpec,
    Metadata,
    Model,
    ModelRoute,
    ModelRouteSpec,
    ModelSource,
    ModelSpec,
    Resource,
    RouteTarget,
    Routing,
    Scheduling,
    WorkerSelector,
    WorkerSelectorSpec,
)
from reconciler.spec.params import BackendParameter, ParameterError, parse_backend_parameters
from reconciler.spec.rules import VISIBLE_DEVICES_ENV
from reconciler.spec.schema import render_schemas, write_schemas

__all__ = [
    "API_VERSION",
    "DEFAULT_CLUSTER",
    "KINDS",
    "VISIBLE_DEVICES_ENV",
    "Agent",
    "BackendParameter",
    "Cluster",
    "ClusterSpec",
    "Desired",
    "Document",
    "Loaded",
    "Metadata",
    "Model",
    "ModelRoute",
    "ModelRouteSpec",
    "ModelSource",
    "ModelSpec",
    "ParameterError",
    "Report",
    "Resource",
    "RouteTarget",
    "Routing",
    "Scheduling",
    "WorkerSelector",
    "WorkerSelectorSpec",
    "load_desired",
    "parse_backend_parameters",
    "render_schemas",
    "validate_paths",
    "write_schemas",
]
