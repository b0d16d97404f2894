"""Serve the HTTP door with uvicorn on the router's own event loop (beside the gRPC server).

    door = HttpServer(router, config.http, serving=lambda: ...)
    port = await door.start()          # binds config.http.listen (port 0: any free port)
    ...
    await door.stop(grace, notice)      # stop accepting, let requests in flight finish, then cancel them

uvicorn runs as a task on the running loop (no second loop, no thread): its
signal capture is turned off, because the router's own SIGTERM/SIGINT handler
drains both doors. uvicorn's logging configuration is never applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Callable

import uvicorn

from mesh.config import HttpConfig, ServerTLS
from router.core import Router
from router.http.app import Door, build_app

log = logging.getLogger("qarr.router")


class _Uvicorn(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self):
        yield  # the router owns SIGTERM/SIGINT


class HttpServer:
    def __init__(self, router: Router, config: HttpConfig, serving: Callable[[], bool],
                 caller_of: Callable[[str | None], str | None] | None = None, tls: ServerTLS | None = None) -> None:
        """`caller_of(authorization)`: the caller a bearer token names (None: refused); None when auth is off.
        `tls`: the router's listener certificate (and client CA for mutual TLS), served here too: https."""
        self.config = config
        self.tls = tls
        self.door = Door(router, config, serving, caller_of)
        self.app = build_app(self.door)
        self.port = 0
        self._server: _Uvicorn | None = None
        self._task: asyncio.Task | None = None

    async def start(self, listen: str | None = None) -> int:
        host, _, port = (listen or self.config.listen).rpartition(":")
        host = host.strip("[]") or "127.0.0.1"
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, int(port)))
        except OSError as e:
            sock.close()
            raise OSError(f"HTTP door cannot listen on {listen or self.config.listen}: {e}") from None
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        tls = {}
        if self.tls is not None:
            tls = {"ssl_certfile": self.tls.cert, "ssl_keyfile": self.tls.key}
            if self.tls.require_client_cert:
                tls.update(ssl_ca_certs=self.tls.client_ca, ssl_cert_reqs=ssl.CERT_REQUIRED)
        config = uvicorn.Config(
            self.app, loop="none", http="httptools", ws="none", lifespan="off", interface="asgi3",
            log_config=None, log_level="warning", access_log=False, server_header=False, proxy_headers=False,
            timeout_graceful_shutdown=None, **tls,
        )
        self._server = _Uvicorn(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="http-door")
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises what stopped it
                raise RuntimeError("HTTP door stopped while starting")
            await asyncio.sleep(0.01)
        log.info("router OpenAI-compatible HTTP door on %s://%s:%d/v1", "https" if self.tls else "http", host, self.port)
        return self.port

    async def stop(self, grace: float) -> None:
        """Stop accepting, give requests in flight `grace` seconds, then cancel them (the core cancels the tier calls)."""
        if self._server is None or self._task is None:
            return
        self._server.config.timeout_graceful_shutdown = max(grace, 0.2)  # idle keep-alive connections close within it
        self._server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(self._task), grace + 5)
        except asyncio.TimeoutError:
            self._server.force_exit = True
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
