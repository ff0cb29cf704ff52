"""Stage 8: the node agent. Detection, model files, the process supervisor, its API."""

from reconciler.agent.api import AgentConfig, create_app
from reconciler.agent.main import default_data_dir, default_ip, read_or_create_token, run_agent
from reconciler.agent.record import RecordDamaged, StartRefused
from reconciler.agent.supervisor import Supervisor, backoff

__all__ = [
    "AgentConfig",
    "RecordDamaged",
    "StartRefused",
    "Supervisor",
    "backoff",
    "create_app",
    "default_data_dir",
    "default_ip",
    "read_or_create_token",
    "run_agent",
]
