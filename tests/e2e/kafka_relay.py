"""TEST-ONLY relay for the testbed's plaintext Kafka broker (Tansu): every connection of the
appliance's Kafka client passes through it, so a test can cut them (`cut`, `hang`, `heal` of
`relay.py`), and with `tls` it is a TLS front, so the client can be tested over TLS without a
broker that speaks it.

A plain relay is not enough: a Kafka client connects to the brokers the Metadata answer names, and
the broker names its own plaintext port. The relay rewrites that port (and a FindCoordinator
answer's) to its own, in place: a port is a fixed 4 bytes, so no frame changes size. Nothing else
is interpreted or changed. It reads each request's header to know which answer is which.
"""

from __future__ import annotations

import asyncio
import ssl
import struct

from relay import TcpRelay

METADATA, FIND_COORDINATOR, API_VERSIONS = 3, 10, 18
# The first version of each API with a flexible (tagged-field, compact-string) encoding.
FLEXIBLE_FROM = {METADATA: 9, FIND_COORDINATOR: 3}


class Reader:
    """Walks a Kafka answer's body, noting where each port it passes sits."""

    def __init__(self, data: bytes, pos: int, compact: bool):
        self.data, self.pos, self.compact = data, pos, compact

    def int16(self) -> int:
        self.pos += 2
        return struct.unpack_from(">h", self.data, self.pos - 2)[0]

    def int32(self) -> int:
        self.pos += 4
        return struct.unpack_from(">i", self.data, self.pos - 4)[0]

    def uvarint(self) -> int:
        value, shift = 0, 0
        while True:
            b = self.data[self.pos]
            self.pos += 1
            value |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return value

    def string(self) -> None:
        """A (nullable) string, skipped."""
        length = self.uvarint() - 1 if self.compact else self.int16()
        self.pos += max(length, 0)

    def array_length(self) -> int:
        return self.uvarint() - 1 if self.compact else self.int32()

    def tags(self) -> None:
        if self.compact:
            for _ in range(self.uvarint()):
                self.uvarint()
                self.pos += self.uvarint()


def port_offsets(api_key: int, version: int, frame: bytes) -> list[int]:
    """Where the broker ports sit in an answer `frame` (after its 4-byte size) to that request."""
    compact = version >= FLEXIBLE_FROM.get(api_key, 1 << 15)
    r = Reader(frame, 4, compact)  # after the correlation id
    r.tags()  # the header's own tags (flexible answers)
    ports = []
    if api_key == METADATA:
        if version >= 3:
            r.int32()  # throttle_time_ms
        for _ in range(r.array_length()):
            r.int32()  # node_id
            r.string()  # host
            ports.append(r.pos)
            r.int32()
            if version >= 1:
                r.string()  # rack
            r.tags()
    elif api_key == FIND_COORDINATOR:
        if version >= 1:
            r.int32()  # throttle_time_ms
        if version < 4:
            r.int16()  # error_code
            if version >= 1:
                r.string()  # error_message
            r.int32()  # node_id
            r.string()  # host
            ports.append(r.pos)
        else:
            for _ in range(r.array_length()):
                r.string()  # key
                r.int32()  # node_id
                r.string()  # host
                ports.append(r.pos)
                r.int32()
                r.int16()  # error_code
                r.string()  # error_message
                r.tags()
    return ports


class KafkaRelay(TcpRelay):
    """Accepts connections (TLS with `tls`) on `port`, relays them in plaintext to the broker on
    `upstream_port`, and names itself as the broker in Metadata and FindCoordinator answers."""

    def __init__(self, port: int, upstream_port: int, tls: ssl.SSLContext | None = None):
        super().__init__(port, upstream_port, tls)
        self.rewritten = 0

    async def _relay(self, reader, writer, up_reader, up_writer) -> None:
        asked: dict[int, tuple[int, int]] = {}  # correlation id -> (api key, version)
        await asyncio.gather(self._requests(reader, up_writer, asked),
                             self._answers(up_reader, writer, asked), return_exceptions=True)

    @staticmethod
    async def _frames(reader: asyncio.StreamReader):
        while True:
            try:
                size = await reader.readexactly(4)
                yield size + await reader.readexactly(struct.unpack(">i", size)[0])
            except asyncio.IncompleteReadError:
                return

    async def _requests(self, reader, writer, asked) -> None:
        try:
            async for frame in self._frames(reader):
                await self._flowing_event().wait()
                api_key, version, correlation = struct.unpack_from(">hhi", frame, 4)
                asked[correlation] = (api_key, version)
                writer.write(frame)
                await writer.drain()
        finally:
            writer.close()

    async def _answers(self, reader, writer, asked) -> None:
        try:
            async for frame in self._frames(reader):
                await self._flowing_event().wait()
                correlation = struct.unpack_from(">i", frame, 4)[0]
                api_key, version = asked.pop(correlation, (None, 0))
                if api_key in (METADATA, FIND_COORDINATOR):
                    body = bytearray(frame)
                    for at in port_offsets(api_key, version, memoryview(frame)[4:]):
                        if struct.unpack_from(">i", body, 4 + at)[0] == self.upstream_port:
                            struct.pack_into(">i", body, 4 + at, self.port)
                            self.rewritten += 1
                    frame = bytes(body)
                writer.write(frame)
                await writer.drain()
        finally:
            writer.close()
