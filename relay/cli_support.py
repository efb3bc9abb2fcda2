"""What every `relay` command shares: the --config option, and errors turned into one line and an exit code."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from relay import errors
from relay.config import Settings, load_settings
from relay.errors import RelayError
from relay.escaping import for_terminal

F = TypeVar("F", bound=Callable[..., Any])

config_option = click.option(
    "--config", "config_path", metavar="PATH", help="Config file (else $RELAY_CONFIG, ./relay.toml, …)."
)


ENV_ADMIN_PASSWORD = "RELAY_ADMIN_PASSWORD"  # noqa: S105 - the name of a variable, not a secret


def admin_auth(settings: Settings) -> tuple[str, str] | None:
    """Credentials for the admin listener when it asks for a password (from $RELAY_ADMIN_PASSWORD)."""
    password = os.environ.get(ENV_ADMIN_PASSWORD, "")
    return (settings.admin.username, password) if settings.admin.username and password else None


def refuse_unauthorized(status: int) -> None:
    """A 401 from the admin listener, as one line saying what to set."""
    if status == 401:
        raise RelayError(f"the admin listener asks for admin.username's password: set {ENV_ADMIN_PASSWORD}")


def load(config_path: str | None) -> Settings:
    """The settings a command runs with."""
    return load_settings(config_path)


def quiet_broken_pipe() -> None:
    """The reader of our output went away (`relay log --json | head -1`): stop quietly, as Unix tools do.

    stdout is pointed at /dev/null so the interpreter's last flush cannot fail again; the exit status is the one a
    tool killed by SIGPIPE reports (128 + 13).
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    sys.exit(errors.BROKEN_PIPE)


def handle_errors(fn: F) -> F:
    """Turn relay's errors into one line on stderr and their exit code, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except BrokenPipeError:
            quiet_broken_pipe()
        except RelayError as exc:
            click.echo(f"relay: {for_terminal(str(exc))}", err=True)
            sys.exit(exc.exit_code)
        except (OSError, ValueError) as exc:
            click.echo(f"relay: {for_terminal(str(exc))}", err=True)
            sys.exit(errors.FAILURE)

    return wrapper  # type: ignore[return-value]
