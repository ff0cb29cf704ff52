"""Stage: router."""
