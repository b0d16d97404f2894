"""The reference: a minimal grpc.aio relay, bytes in and bytes out, no routing, no logs.

    python -m bench.relay_plain --listen 127.0.0.1:P --upstream 127.0.0.1:T

Every unary-stream call it receives is forwarded to one upstream method
(TierService/Generate by default); RouterService and TierService requests share
field numbers, so a router-shaped request is served by a tier as it is. This is the floor a Python gRPC
router can hope for: QARR's router divided by this is its own overhead.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc


class Relay(grpc.GenericRpcHandler):
    def __init__(self, channel: grpc.aio.Channel, method: str) -> None:
        self.upstream = channel.unary_stream(method)
        self.handler = grpc.unary_stream_rpc_method_handler(self.relay)

    def service(self, details: grpc.HandlerCallDetails):
        return None if details.method.startswith("/grpc.") else self.handler

    async def relay(self, raw: bytes, context: grpc.aio.ServicerContext):
        call = self.upstream(raw, timeout=context.time_remaining())
        try:
            async for chunk in call:
                yield chunk
        except grpc.aio.AioRpcError as e:
            await context.abort(e.code(), e.details())
        finally:
            call.cancel()


async def serve(listen: str, upstream: str, method: str) -> None:
    channel = grpc.aio.insecure_channel(upstream, options=(("grpc.enable_retries", 0),))
    server = grpc.aio.server(options=[("grpc.max_concurrent_streams", 4096)])
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    server.add_generic_rpc_handlers((Relay(channel, method),))
    if server.add_insecure_port(listen) == 0:
        raise SystemExit(f"cannot listen on {listen}")
    await server.start()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1)
    await channel.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.relay_plain", description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--upstream-method", default="/qarr.v1.TierService/Generate")
    parser.add_argument("--no-uvloop", action="store_true", help="plain asyncio loop")
    args = parser.parse_args()
    if not args.no_uvloop:
        try:
            import uvloop

            uvloop.install()
        except ImportError:
            pass
    asyncio.run(serve(args.listen, args.upstream, args.upstream_method))


if __name__ == "__main__":
    main()
