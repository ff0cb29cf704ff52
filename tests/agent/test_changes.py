"""The agent's change version: what the server's long poll waits on."""

from __future__ import annotations

import asyncio

from reconciler.agent.changes import Changes


def test_only_a_different_signature_is_a_new_version() -> None:
    changes = Changes()
    start = changes.version
    changes.note((("web-0", "h", "Starting", 1),))
    changes.note((("web-0", "h", "Starting", 1),))
    assert changes.version == start + 1
    changes.note((("web-0", "h", "Running", 1),))
    assert changes.version == start + 2


def test_a_new_agent_has_another_version() -> None:
    assert Changes().version != Changes().version


def test_the_long_poll_answers_at_once_for_an_old_version_else_on_the_change() -> None:
    async def scenario() -> tuple[int, int, int]:
        changes = Changes()
        current = changes.version
        at_once = await asyncio.wait_for(changes.after(current - 1, 30), 1)
        waiting = asyncio.create_task(changes.after(current, 30))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        changes.note(("changed",))
        return at_once, await asyncio.wait_for(waiting, 1), current

    at_once, after_change, current = asyncio.run(scenario())
    assert at_once == current and after_change == current + 1


def test_the_long_poll_ends_after_its_wait_without_a_change() -> None:
    changes = Changes()
    assert asyncio.run(changes.after(changes.version, 0.05)) == changes.version
