"""Errors a user can act on, and the exit codes the CLI turns them into."""

from __future__ import annotations

#: Exit codes, named as uvicorn names its own (systemd's RestartPreventExitStatus=3 relies on CONFIG_ERROR).
OK = 0
FAILURE = 1
USAGE = 2
CONFIG_ERROR = 3
NOT_RUNNING = 4
BROKEN_PIPE = 141  # what a shell reports for a tool killed by SIGPIPE


class RelayError(Exception):
    """Base class: the message is one line that says what happened and what to do."""

    exit_code = FAILURE


class ConfigError(RelayError):
    """The configuration cannot be used as it is."""

    exit_code = CONFIG_ERROR


class StoreError(RelayError):
    """The log or the outbox could not be read or written."""


class TunnelError(RelayError):
    """The tunnel could not be opened."""


class TunnelAuthError(TunnelError):
    """ngrok refused the authtoken: a configuration problem, so systemd must not loop on it."""

    exit_code = CONFIG_ERROR


class NotRunningError(RelayError):
    """No relay instance answers on the admin listener."""

    exit_code = NOT_RUNNING
