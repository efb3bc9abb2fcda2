"""A Debian booted by systemd-nspawn on a throwaway overlay of the cached root; commands run inside via nsenter."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.system.proxy import ConnectProxy, listen_in

# The environment of a root shell inside: nothing of the host's leaks in but the pip settings (see pip_environment).
ROOT_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "SYSTEMD_COLORS": "0",
}
REPO_INSIDE = "/srv/relay.git"


class BootFailed(Exception):
    """systemd-nspawn could not boot the container here (the reason is in the message)."""


@dataclass
class Machine:
    """A booted container: its root as the host sees it, and the host pid of its init."""

    root: Path
    nspawn: subprocess.Popen[bytes]
    leader: int
    env: dict[str, str] = field(default_factory=dict)

    def path(self, inside: str) -> Path:
        """The host's path to a file inside the container."""
        return self.root / inside.lstrip("/")

    def run(
        self, command: str, user: str | None = None, timeout: float = 600, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run a shell command inside as root, or as `user` through `su -` (a PAM login, as a person would)."""
        inner = ["su", "-", user, "-c", command] if user else ["bash", "-c", command]
        env = [f"{k}={v}" for k, v in {**ROOT_ENV, **self.env}.items()]
        result = subprocess.run(
            ["nsenter", f"--target={self.leader}", "--all", "env", "-i", *env, *inner],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            who = user or "root"
            raise AssertionError(f"[{who}] {command}: exit {result.returncode}\n{result.stdout}\n{result.stderr}")
        return result


def pip_environment() -> dict[str, str]:
    """The host's PIP_* variables: with the copied config files they make pip inside reach what pip here reaches."""
    return {k: v for k, v in os.environ.items() if k.startswith("PIP_")}


def pip_paths() -> list[Path]:
    """Local files and folders the host's pip configuration names (certificates, constraints, wheel folders)."""
    listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
    paths = []
    for line in listed.splitlines():
        value = line.partition("=")[2].strip("'\"")
        for word in value.split():
            path = Path(word.removeprefix("file://"))
            if path.is_absolute() and path.exists():
                paths.append(path)
    return paths


def prepare(root: Path, repo: Path) -> list[Path]:
    """Copy in the host's CA certificates and pip configuration and a snapshot of the repository.

    Returns the folders the pip configuration names, to be bound read-only into the container.
    """
    host_files = [Path("/etc/ssl/certs/ca-certificates.crt"), Path("/etc/pip.conf"), Path("/etc/xdg/pip")]
    # The local certificates too, so that an update-ca-certificates inside keeps them.
    host_files += Path("/usr/local/share/ca-certificates").glob("*.crt")
    for path in host_files:
        _copy(path, root / path.relative_to("/"))
    for config in (Path.home() / ".config" / "pip", Path.home() / ".pip"):
        for home in ("root", "etc/skel"):  # root's, and that of every user useradd makes
            _copy(config, root / home / config.relative_to(Path.home()))
    folders = []
    for path in pip_paths():
        if path.is_dir():
            # A local index (PEP 503) links its files relative to `simple/`: bind what holds both.
            folders.append(path.parent if path.name == "simple" else path)
        else:
            _copy(path, root / path.relative_to("/"))
    with (root / "etc" / "environment").open("a") as env:  # pam_env gives them to `su -` logins
        env.writelines(f'{k}="{v}"\n' for k, v in pip_environment().items())
    # The README's `git clone` reads this root-owned repository also as an ordinary user.
    (root / "etc" / "gitconfig").write_text(f"[safe]\n\tdirectory = {REPO_INSIDE}\n")
    publish_repo(repo, root / REPO_INSIDE.lstrip("/"))
    return folders


def publish_repo(repo: Path, bare: Path) -> None:
    """The work tree's tracked files as they are now (committed or not), as branch main of a bare repository."""
    git = ["git", "-C", str(repo)]
    stash = subprocess.run([*git, "stash", "create"], capture_output=True, text=True, check=True).stdout.strip()
    revision = stash or "HEAD"
    subprocess.run(["git", "init", "-q", "--bare", "--initial-branch=main", str(bare)], check=True)
    subprocess.run([*git, "push", "-q", str(bare), f"{revision}:refs/heads/main"], check=True)


def _copy(source: Path, target: Path) -> None:
    """Copy a host file or folder, if it exists, to `target` under the container's root."""
    if not source.exists():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, target, dirs_exist_ok=True)
    else:
        shutil.copy2(source, target)


@contextlib.contextmanager
def booted(lower: Path, work: Path, repo: Path, log: Path) -> Iterator[Machine]:
    """Boot a container on an overlay of `lower`; always powered off and unmounted afterwards."""
    root = work / "root"
    root.mkdir(parents=True)
    overlay = _mount_overlay(lower, work, root)
    nspawn: subprocess.Popen[bytes] | None = None
    proxy: ConnectProxy | None = None
    try:
        binds = prepare(root, repo)
        with log.open("wb") as out:
            nspawn = subprocess.Popen(
                [
                    "systemd-nspawn",
                    "--quiet",
                    "--register=no",  # the host has no system bus (and may have no systemd) to register with
                    "--keep-unit",
                    f"--directory={root}",
                    f"--machine=relay-test-{os.getpid()}",
                    "--boot",
                    "--console=read-only",
                    "--private-network",  # its own loopback: the README's ports never meet this machine's
                    *[f"--bind-ro={folder}" for folder in binds],
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        leader = _wait_for_init(nspawn, log)
        proxy = ConnectProxy(listen_in(Path(f"/proc/{leader}/ns/net")))
        machine = Machine(root, nspawn, leader, {**pip_environment(), **_proxy_environment(proxy.port)})
        with (root / "etc" / "environment").open("a") as env:  # for `su -` logins too
            env.writelines(f'{k}="{v}"\n' for k, v in _proxy_environment(proxy.port).items())
        _wait_for_boot(machine, log)
        yield machine
    finally:
        if nspawn is not None:
            _power_off(nspawn)
        if proxy is not None:
            proxy.close()
        if overlay and subprocess.run(["umount", str(root)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "--lazy", str(root)], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


def _proxy_environment(port: int) -> dict[str, str]:
    """How pip inside finds the way out (curl and relay's own CLI talk to loopback, which stays direct)."""
    url = f"http://127.0.0.1:{port}"
    return {
        "HTTPS_PROXY": url,
        "https_proxy": url,
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }


def _mount_overlay(lower: Path, work: Path, root: Path) -> bool:
    """Overlay the cached root so it stays pristine; a full copy where overlayfs is unavailable."""
    (work / "upper").mkdir()
    (work / "work").mkdir()
    options = f"lowerdir={lower},upperdir={work / 'upper'},workdir={work / 'work'}"
    if subprocess.run(["mount", "-t", "overlay", "overlay", "-o", options, str(root)]).returncode == 0:
        return True
    subprocess.run(["cp", "-a", f"{lower}/.", str(root)], check=True)
    return False


def _wait_for_init(nspawn: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> int:
    """The host pid of the container's systemd, once nspawn has started it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if nspawn.poll() is not None:
            raise BootFailed(f"systemd-nspawn exited with {nspawn.returncode}:\n{_tail(log)}")
        for pid in _descendants(nspawn.pid):
            with contextlib.suppress(OSError):
                if Path(f"/proc/{pid}/comm").read_text().strip() == "systemd":
                    return pid
        time.sleep(0.1)
    raise BootFailed(f"no systemd started in the container within {timeout} s:\n{_tail(log)}")


def _wait_for_boot(machine: Machine, log: Path, timeout: float = 120) -> None:
    """Until the container's systemd has finished starting up (`running`, or `degraded` with a unit failed)."""
    deadline = time.monotonic() + timeout
    while True:
        # --wait waits for start-up to finish, once the manager can be reached at all.
        result = machine.run("systemctl is-system-running --wait", check=False, timeout=timeout)
        if result.stdout.strip() in ("running", "degraded"):
            return
        if machine.nspawn.poll() is not None or time.monotonic() > deadline:
            said = (result.stdout + result.stderr).strip()
            raise BootFailed(f"the container's systemd did not finish booting ({said}):\n{_tail(log)}")
        time.sleep(0.2)


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _power_off(nspawn: subprocess.Popen[bytes]) -> None:
    """SIGTERM asks nspawn to shut the container down cleanly; SIGKILL the lot if that takes too long."""
    if nspawn.poll() is None:
        nspawn.terminate()
        try:
            nspawn.wait(60)
            return
        except subprocess.TimeoutExpired:
            pass
        for pid in _descendants(nspawn.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        nspawn.kill()
        nspawn.wait(30)


def _tail(log: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
