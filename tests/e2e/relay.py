"""A loopback TCP relay for tests and the bench: listens on a port and passes every byte on to
an upstream port, from `start()` on (so a target can be unreachable until then).
`_downstream` is the one direction a subclass may rewrite (see `pulsar_relay.py`).
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

    def start(self) -> "TcpRelay":
        self._thread.start()
        fut = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._client, "127.0.0.1", self.port, ssl=self.tls), self._loop)
        self._server = fut.result(timeout=10)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return
        self.connections += 1
        await asyncio.gather(self._pipe(reader, up_writer), self._downstream(up_reader, writer),
                             return_exceptions=True)

    async def _downstream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Upstream to client: unchanged here."""
        await self._pipe(reader, writer)

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(1 << 16):
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()
