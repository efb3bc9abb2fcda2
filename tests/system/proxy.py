"""pip's way out of the container: an HTTPS (CONNECT) proxy listening on the container's own loopback.

The container has a network of its own, so the README's ports never meet the host's; the proxy's listening socket
is made inside that network namespace, and its outgoing connections leave from the host's, as the host's pip would.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import socket
import threading
from pathlib import Path

CLONE_NEWNET = 0x40000000
HTTPS_PORT = 443  # pip fetches over HTTPS only; nothing else is let through


def listen_in(netns: Path) -> socket.socket:
    """A TCP socket listening on 127.0.0.1 inside another network namespace.

    A socket stays in the namespace it was made in; the thread that enters the namespace to make it ends there,
    so no thread of this process is left in the container's network.
    """
    made: list[socket.socket | BaseException] = []

    def enter_and_listen() -> None:
        try:
            fd = os.open(netns, os.O_RDONLY)
            try:
                if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns {netns}")
            finally:
                os.close(fd)
            made.append(socket.create_server(("127.0.0.1", 0)))
        except BaseException as exc:  # handed to the caller's thread
            made.append(exc)

    thread = threading.Thread(target=enter_and_listen)
    thread.start()
    thread.join()
    if isinstance(made[0], BaseException):
        raise made[0]
    return made[0]


class ConnectProxy:
    """Serves CONNECT host:443 from a listening socket, each tunnel on threads of its own, until closed."""

    def __init__(self, listener: socket.socket) -> None:
        self.listener = listener
        self.port = int(listener.getsockname()[1])
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop accepting (shutdown wakes the blocked accept)."""
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self._thread.join(5)

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._tunnel, args=(conn,), daemon=True).start()

    def _tunnel(self, conn: socket.socket) -> None:
        with conn:
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 65536:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                head += chunk
            request, _, rest = head.partition(b"\r\n\r\n")
            words = request.split(b"\r\n", 1)[0].decode("latin-1").split()
            host, _, port = words[1].rpartition(":") if len(words) == 3 else ("", "", "")
            if words[:1] != ["CONNECT"] or port != str(HTTPS_PORT):
                conn.sendall(b"HTTP/1.1 403 Forbidden\r\n\r\n")
                return
            try:
                upstream = socket.create_connection((host.strip("[]"), HTTPS_PORT), timeout=30)
            except OSError:
                conn.sendall(b"HTTP/1.1 502 Bad Gateway\r\n\r\n")
                return
            with upstream:
                upstream.settimeout(None)
                conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                if rest:
                    upstream.sendall(rest)
                back = threading.Thread(target=_pipe, args=(upstream, conn), daemon=True)
                back.start()
                _pipe(conn, upstream)
                back.join()


def _pipe(source: socket.socket, target: socket.socket) -> None:
    """Copy one direction of a tunnel until its end closes, then pass the close on."""
    with contextlib.suppress(OSError):
        while chunk := source.recv(65536):
            target.sendall(chunk)
    with contextlib.suppress(OSError):
        target.shutdown(socket.SHUT_WR)
