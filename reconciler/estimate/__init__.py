"""Stage: estimate."""
