"""A loopback TCP relay for tests and the bench: listens on a port and passes every byte on to
an upstream port, from `start()` on (so a target can be unreachable until then).
`_downstream` is the one direction a subclass may rewrite (see `pulsar_relay.py`).

Faults, as the appliance would meet them on a network:
- `cut()`: every connection is closed, and new ones are closed as soon as they are accepted
  (a dependency that is down: refused, reset).
- `hang()`: connections stay open and new ones are accepted, but no byte passes in either
  direction (a dependency that is silent: a stalled network, a hung process).
- `heal()`: bytes pass again; what a hang held back is delivered, in order.

With `tls` (a server `ssl.SSLContext`) it accepts TLS only and passes on the plaintext: a TLS
front for a plaintext server."""

from __future__ import annotations

import asyncio
import ssl
import threading


class TcpRelay:
    """Listens on 127.0.0.1:`port` and relays each connection to 127.0.0.1:`upstream_port`."""

    def __init__(self, port: int, upstream_port: int, tls: ssl.SSLContext | None = None):
        self.port, self.upstream_port, self.tls = port, upstream_port, tls
        # Connections relayed upstream: with `tls`, those whose handshake succeeded.
        self.connections = 0
        self._loop = asyncio.new_event_loop()
        self._server = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._writers: set[asyncio.StreamWriter] = set()
        self._cut = False
        self._flowing: asyncio.Event | None = None

    def cut(self) -> None:
        def close_all():
            self._cut = True
            for writer in list(self._writers):
                writer.transport.abort()
        self._loop.call_soon_threadsafe(close_all)

    def hang(self) -> None:
        self._loop.call_soon_threadsafe(lambda: self._flowing_event().clear())

    def heal(self) -> None:
        def heal():
            self._cut = False
            self._flowing_event().set()
        self._loop.call_soon_threadsafe(heal)

    def _flowing_event(self) -> asyncio.Event:
        if self._flowing is None:
            self._flowing = asyncio.Event()
            self._flowing.set()
        return self._flowing

    def start(self) -> "TcpRelay":
        self._thread.start()
        fut = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._client, "127.0.0.1", self.port, ssl=self.tls), self._loop)
        self._server = fut.result(timeout=10)
        return self

    def stop(self) -> None:
        async def shutdown():
            if self._server is not None:
                self._server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            # Ended here, not left to be collected once the loop is closed.
            pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._cut:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return
        self.connections += 1
        self._writers.update((writer, up_writer))
        try:
            await self._relay(reader, writer, up_reader, up_writer)
        finally:
            self._writers.difference_update((writer, up_writer))

    async def _relay(self, reader, writer, up_reader, up_writer) -> None:
        """Both directions of one connection, until either ends."""
        await asyncio.gather(self._pipe(reader, up_writer), self._downstream(up_reader, writer),
                             return_exceptions=True)

    async def _downstream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Upstream to client: unchanged here."""
        await self._pipe(reader, writer)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(1 << 16):
                await self._flowing_event().wait()
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()
