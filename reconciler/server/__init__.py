"""Stage 9: the GitOps server. The reconcile loop, its store, status API and metrics."""

from reconciler.server.loop import Reconciler, requeue_after
from reconciler.server.main import HostedApp, ServerConfig, run_server, serve, server_file
from reconciler.server.reasons import Outcome
from reconciler.server.store import Assignment, Store, default_url
from reconciler.server.workers import WorkerBook, fence

__all__ = [
    "Assignment",
    "HostedApp",
    "Outcome",
    "Reconciler",
    "ServerConfig",
    "Store",
    "WorkerBook",
    "default_url",
    "fence",
    "requeue_after",
    "run_server",
    "serve",
    "server_file",
]
