"""The README's service steps as commands: parsed out of README.md, so the boot test and the docs cannot drift."""

from __future__ import annotations

import re
from dataclasses import dataclass

SECTION = "## Running as a service"
SYSTEM = "Running relay as a systemd service"
USER = "As a user service"


@dataclass(frozen=True)
class Step:
    """One command line of a console block: `#` is typed as root, `$` as the ordinary user."""

    command: str
    as_root: bool

    @property
    def follows(self) -> bool:
        """`journalctl -f` and the like run until interrupted."""
        return re.search(r"\s-f(\s|$)", self.command.split("#", 1)[0]) is not None


def service_steps(readme: str) -> dict[str, list[Step]]:
    """Every console block of the README's service section, keyed by the `###` heading it sits under."""
    start = readme.index(SECTION)
    following = readme.find("\n## ", start + len(SECTION))
    section = readme[start : following if following != -1 else len(readme)]
    blocks: dict[str, list[Step]] = {}
    for part in re.split(r"^### ", section, flags=re.M)[1:]:
        heading, _, body = part.partition("\n")
        steps = blocks.setdefault(heading.strip(), [])
        for block in re.findall(r"^```console\n(.*?)^```", body, flags=re.M | re.S):
            for line in block.splitlines():
                if line.startswith(("# ", "$ ")):  # other lines are output shown in the README
                    steps.append(Step(line[2:], as_root=line.startswith("#")))
    return blocks
