"""A loopback TCP proxy the test controls: it forwards both ways until `stop_forwarding()`, then holds every
connection open and moves no byte (a black hole: a tier behind a dead link, a stuck load balancer), until
`resume()`.

    proxy = await BlackHole("127.0.0.1:50061").start()     # point the router at proxy.address
    proxy.stop_forwarding()
"""

from __future__ import annotations

import asyncio
import contextlib
import socket


class BlackHole:
    def __init__(self, upstream: str, rcvbuf: int | None = None) -> None:
        """`rcvbuf`: SO_RCVBUF of the connections to `upstream`, so that little can pile up in this host's kernel
        once forwarding stops (what is held is then held by the upstream server)."""
        self.upstream_host, port = upstream.rsplit(":", 1)
        self.upstream_port = int(port)
        self.forwarding = asyncio.Event()
        self.forwarding.set()
        self.server: asyncio.Server | None = None
        self.address = ""
        self._pipes: set[asyncio.Task] = set()
        self.rcvbuf = rcvbuf

    async def start(self) -> BlackHole:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.address = f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    def stop_forwarding(self) -> None:
        self.forwarding.clear()

    def resume(self) -> None:
        self.forwarding.set()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            if self.rcvbuf:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)  # before connecting: sets the window
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, (self.upstream_host, self.upstream_port))
            up_reader, up_writer = await asyncio.open_connection(sock=sock)
        except OSError:
            writer.close()
            return
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(src, dst))
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while True:
                await self.forwarding.wait()  # stopped: read nothing, so the kernel buffers fill and stall
                data = await src.read(65536)
                if not data:
                    break
                await self.forwarding.wait()
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            dst.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self._pipes):
            task.cancel()
        for task in list(self._pipes):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 2)
