"""Stage 6: rendering. One jinja2 template per backend -> argv, env, port, health path."""

from reconciler.render.instance import canonical, chat_format, merge, render_helper, render_main, spec_hash

__all__ = ["canonical", "chat_format", "merge", "render_helper", "render_main", "spec_hash"]
