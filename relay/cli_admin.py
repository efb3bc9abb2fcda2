"""`relay hash-password`: the value for `admin.password_hash`, so the admin listener can ask for a password."""

from __future__ import annotations

import sys

import click

from relay.errors import RelayError


@click.command("hash-password")
@click.option("--stdin", "from_stdin", is_flag=True, help="Read the password from the first line of stdin.")
def hash_password_command(from_stdin: bool) -> None:
    """Hash a password for admin.password_hash (scrypt); it is asked for twice, never echoed.

    \b
    Example:
        relay hash-password
        printf '%s\\n' "$PASSWORD" | relay hash-password --stdin
    """
    from relay.web.passwords import hash_password

    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True, err=True)
    if len(password) < 8:
        click.echo("relay: a password of at least 8 characters, please", err=True)
        sys.exit(RelayError.exit_code)
    click.echo(hash_password(password))
