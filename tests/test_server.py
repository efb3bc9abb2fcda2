"""The listening sockets relay binds itself (see server.bind)."""

from __future__ import annotations

import asyncio
import socket

from relay.server import bind


def test_accepted_connections_do_not_wait_for_delayed_acks() -> None:
    """Keep-alive requests stall ~40 ms each without TCP_NODELAY; asyncio sets it only on IPPROTO_TCP sockets."""
    listener = bind("127.0.0.1", 0, "server")
    nodelay: list[int] = []

    async def scenario() -> None:
        async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            sock = writer.get_extra_info("socket")
            nodelay.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(accepted, sock=listener)
        _, writer = await asyncio.open_connection(*listener.getsockname()[:2])
        for _ in range(500):
            if nodelay:
                break
            await asyncio.sleep(0.01)
        writer.close()
        server.close()
        await server.wait_closed()

    asyncio.run(scenario())
    assert len(nodelay) == 1
    assert nodelay[0] != 0
