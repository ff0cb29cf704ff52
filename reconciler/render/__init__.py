"""Stage 6: rendering. One jinja2 template per backend -> argv, env, port, health path."""

from reconciler.render.instance import canonical, chat_format, merge, render_helper, render_main, spec_hash
from reconciler.render.replica import PortFor, render_replica

__all__ = [
    "PortFor",
    "canonical",
    "chat_format",
    "merge",
    "render_helper",
    "render_main",
    "render_replica",
    "spec_hash",
]
