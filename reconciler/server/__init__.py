"""Stage: server."""
