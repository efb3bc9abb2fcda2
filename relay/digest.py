"""Many alerts folded into one, for a target that would otherwise get a burst of pushes (pure)."""

from __future__ import annotations

from relay.formatting import plural
from relay.messages import Message

#: Sections of a digest, in the order a person should read them.
_GROUPS = (("failure", "Failed"), ("warning", "Warnings"), ("success", "Ready"))


def digest(messages: list[Message]) -> Message:
    """One message listing each folded alert on its own line (task id, titles, durations, link), grouped.

    The title carries the counts: `relay: 21 updates: 3 failed, 18 ready`.
    """
    groups: dict[str, list[Message]] = {name: [] for name, _ in _GROUPS}
    for message in messages:
        groups.get(message.category, groups["success"]).append(message)
    counts = []
    md: list[str] = []
    txt: list[str] = []
    for name, heading in _GROUPS:
        members = groups[name]
        if not members:
            continue
        counts.append(f"{len(members)} {heading.lower()}")
        md.append(f"**{heading} ({len(members)})**")
        txt.append(f"{heading} ({len(members)})")
        for m in members:
            md.append(f"- {m.entry_markdown or m.entry or m.title}")
            txt.append(f"- {m.entry or m.title}" + (f"\n  {m.link}" if m.link else ""))
        md.append("")
        txt.append("")
    title = f"relay: {plural(len(messages), 'update')}: {', '.join(counts)}"
    worst = "failure" if groups["failure"] else ("warning" if groups["warning"] else "success")
    return Message("digest", title, "\n".join(md).strip(), "\n".join(txt).strip(), worst, title)
