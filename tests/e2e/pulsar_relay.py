"""TEST-ONLY loopback relay between milvus-cdc's Pulsar reader and pulsar-lite.

Why: pulsar-lite sends MESSAGE frames without the optional magic-number and CRC32C checksum
section; the `pulsar` crate's frame decoder assumes it (a real broker forwards the producer's
checksummed frame). The product keeps the crate's checks as they are; this relay, used only by
tests, adds the standard section to each MESSAGE frame pulsar-lite sends:

    [total size][command size][command][0x0e01][crc32c(rest)][metadata size][metadata][payload]

and passes every other byte through unchanged. Lookup answers name the broker's address; the
relay rewrites it to its own (same length: both ports have 4 digits) so the client stays on the
relay. Nothing else is interpreted or changed: payloads, message ids and ordering are pulsar-lite's.
"""

from __future__ import annotations

import asyncio
import struct

from relay import TcpRelay

MAGIC = b"\x0e\x01"
MESSAGE = 9  # BaseCommand.Type.MESSAGE


def _crc32c_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for b in data:
        crc = _TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def command_type(command: bytes) -> int | None:
    """BaseCommand.type: field 1, a varint, written first."""
    if not command or command[0] != 0x08:
        return None
    value, shift = 0, 0
    for b in command[1:6]:
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value
    return None


def reframe(frame: bytes, broker: bytes, relay: bytes) -> bytes:
    """One broker frame (without its 4-byte total size) as the client should get it."""
    (command_size,) = struct.unpack(">I", frame[:4])
    command = frame[4:4 + command_size]
    rest = frame[4 + command_size:]
    if broker in command:
        command = command.replace(broker, relay)
    if command_type(command) == MESSAGE and rest and not rest.startswith(MAGIC):
        rest = MAGIC + struct.pack(">I", crc32c(rest)) + rest
    body = struct.pack(">I", len(command)) + command + rest
    return struct.pack(">I", len(body)) + body


class Relay(TcpRelay):
    """Listens on 127.0.0.1:`port` (4 digits) and relays to pulsar-lite on `upstream_port`."""

    def __init__(self, port: int, upstream_port: int = 6650):
        assert len(str(port)) == len(str(upstream_port)) == 4
        super().__init__(port, upstream_port)
        self.broker = f"127.0.0.1:{upstream_port}".encode()
        self.relay = f"127.0.0.1:{port}".encode()
        self.frames_reframed = 0

    @property
    def url(self) -> str:
        return f"pulsar://127.0.0.1:{self.port}"

    async def _downstream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Broker to client, frame by frame, with the broker's address rewritten."""
        try:
            while True:
                (size,) = struct.unpack(">I", await reader.readexactly(4))
                frame = await reader.readexactly(size)
                out = reframe(frame, self.broker, self.relay)
                if len(out) != size + 4:
                    self.frames_reframed += 1
                writer.write(out)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
