"""Stage 2: sources of desired state. A git repository, a watched folder, push webhooks."""

from reconciler.source.git import Checkout, GitSource
from reconciler.source.watch import DirSource
from reconciler.source.webhook import sign, verify

__all__ = ["Checkout", "DirSource", "GitSource", "sign", "verify"]
