"""`python -m reconciler.cli`, as the tests and the agent's own children run it."""

from reconciler.cli import run

# Guarded: the server's planner process (multiprocessing's spawn) imports this module again.
if __name__ == "__main__":
    run()
