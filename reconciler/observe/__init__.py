"""Stage: observe."""
