"""Stage 10: the OpenAI-compatible router. One endpoint for every Running instance."""

from reconciler.router.app import Router, create_router_app
from reconciler.router.balance import LOAD_FACTOR, Balancer, Ring, SmoothWeighted
from reconciler.router.metrics import RouterMetrics
from reconciler.router.relay import Relay
from reconciler.router.table import Endpoint, ModelEntry, RouteEntry, RoutingTable, build_table
from reconciler.router.usage import MemoryUsage, UsageRecorder

__all__ = [
    "LOAD_FACTOR",
    "Balancer",
    "Endpoint",
    "MemoryUsage",
    "ModelEntry",
    "Relay",
    "Ring",
    "RouteEntry",
    "Router",
    "RouterMetrics",
    "RoutingTable",
    "SmoothWeighted",
    "UsageRecorder",
    "build_table",
    "create_router_app",
]
