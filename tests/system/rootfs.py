"""A minimal Debian for systemd-nspawn: made once by debootstrap from the mirror apt uses, cached by what it holds."""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

# What the README's service steps need: the init, the bus, the user manager, Python's venv, git, and curl to post.
PACKAGES = ("systemd", "dbus", "libpam-systemd", "python3-venv", "git", "curl")
CACHE = Path(os.environ.get("RELAY_NSPAWN_CACHE", "/var/cache/relay-nspawn"))
DEFAULT_MIRROR = "http://deb.debian.org/debian"


@dataclass(frozen=True)
class Release:
    """Which Debian to bootstrap, from where."""

    suite: str
    mirror: str

    @property
    def key(self) -> str:
        """Names the cached root: a change of suite, mirror or packages builds a new one."""
        text = f"{self.suite} {self.mirror} minbase {' '.join(PACKAGES)}"
        return f"{self.suite}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def host_release(etc: Path = Path("/etc")) -> Release:
    """The host's own Debian release and the mirror its apt already uses for it."""
    fields = dict(line.split("=", 1) for line in (etc / "os-release").read_text().splitlines() if "=" in line)
    suite = fields.get("VERSION_CODENAME", "").strip('"') or "bookworm"
    return Release(suite, apt_mirror(suite, etc / "apt") or DEFAULT_MIRROR)


def apt_mirror(suite: str, apt: Path = Path("/etc/apt")) -> str | None:
    """The first `deb` URI apt is configured with for `suite`, from deb822 .sources or one-line .list files."""
    for sources in sorted((apt / "sources.list.d").glob("*.sources")):
        for stanza in sources.read_text().split("\n\n"):
            fields = _deb822(stanza)
            if "deb" in fields.get("types", "").split() and suite in fields.get("suites", "").split():
                return fields.get("uris", "").split()[0]
    for lists in [apt / "sources.list", *sorted((apt / "sources.list.d").glob("*.list"))]:
        for line in lists.read_text().splitlines() if lists.is_file() else []:
            words = [w for w in line.split("#", 1)[0].split() if not w.startswith("[")]
            if len(words) >= 3 and words[0] == "deb" and words[2] == suite:
                return words[1]
    return None


def _deb822(stanza: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in stanza.splitlines():
        if ":" in line and not line.startswith(("#", " ", "\t")):
            name, value = line.split(":", 1)
            fields[name.strip().lower()] = value.strip()
    return fields


def cached_root(release: Release, log: Path) -> tuple[Path, float]:
    """The root filesystem for `release`, and the seconds spent building it (0.0 when it was cached).

    Built under a temporary name and renamed when whole, so a cut-short build is never booted; a lock keeps two
    runs on one machine from building it at once.
    """
    CACHE.mkdir(parents=True, exist_ok=True)
    root = CACHE / release.key
    with (CACHE / "build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if root.is_dir():
            return root, 0.0
        partial = CACHE / f"{release.key}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        started = time.monotonic()
        with log.open("w") as out:
            done = subprocess.run(
                [
                    "debootstrap",
                    "--variant=minbase",
                    f"--include={','.join(PACKAGES)}",
                    release.suite,
                    str(partial),
                    release.mirror,
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=1800,
            )
        if done.returncode != 0:
            raise RuntimeError(f"debootstrap failed ({done.returncode}); see {log}")
        partial.rename(root)
        return root, time.monotonic() - started
