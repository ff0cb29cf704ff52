"""Stage: agent."""
