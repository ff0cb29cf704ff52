"""`python -m reconciler.cli`, as the tests and the agent's own children run it."""

from reconciler.cli import run

run()
