"""Alert texts about watched tasks: pure functions building messages.warning values (problems with relay's watch,
routed and folded like relay's other warnings)."""

from __future__ import annotations

from relay.messages import Message, task_link, warning


def duration(seconds: float) -> str:
    """`24 h`, `90 min`, `45 s`: a give-up period as a person says it."""
    if (seconds >= 3600 and seconds % 3600 == 0) or seconds >= 36000:
        return f"{seconds / 3600:g} h"
    if seconds >= 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:g} s"


def lost(task_id: str, kind: str, give_up_after: float, last_status: str | None, link_base: str = "") -> Message:
    """A watched task gave no result within `provider.give_up_after`."""
    text = (
        f"No result for task {task_id} ({kind}) after {duration(give_up_after)}: neither a callback nor a poll "
        f"said it ended (last status from the provider: {last_status or 'none'}). Check it at the provider; "
        f"`relay poll {task_id}` asks again."
    )
    return warning(
        f"relay: no result for task {task_id} after {duration(give_up_after)}", text, task_link(link_base, task_id)
    )


def unknown(task_id: str, kind: str, said: str, link_base: str = "") -> Message:
    """The provider keeps saying it does not know a watched task."""
    text = (
        f"The provider does not know task {task_id} ({kind}): {said}. relay stopped polling it; check the task id "
        f"and kind (`relay watch {task_id} --kind KIND`)."
    )
    return warning(f"relay: the provider does not know task {task_id}", text, task_link(link_base, task_id))


def stopped(reason: str) -> Message:
    """401 or 429: no poll can work until the user acts."""
    text = (
        f"relay stopped polling the provider: {reason}. Watched tasks wait; polling resumes when relay restarts "
        "or when `relay poll TASK_ID` succeeds."
    )
    return warning("relay: polling the provider stopped", text)
