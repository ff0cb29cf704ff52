"""Stage: source."""
