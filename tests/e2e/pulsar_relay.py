"""TEST-ONLY loopback relay between milvus-cdc's Pulsar reader and pulsar-lite.

Why: pulsar-lite sends MESSAGE frames without the optional magic-number and CRC32C checksum
section; the `pulsar` crate's frame decoder assumes it (a real broker forwards the producer's
checksummed frame). The product keeps the crate's checks as they are; this relay, used only by
tests, adds the standard section to each MESSAGE frame pulsar-lite sends:

    [total size][command size][command][0x0e01][crc32c(rest)][metadata size][metadata][payload]

and passes every other byte through unchanged. Lookup answers name the broker's address; the
relay rewrites it to its own (same length: both ports have 4 digits) so the client stays on the
relay. Nothing else is interpreted or changed: payloads, message ids and ordering are pulsar-lite's.

With `tls` the relay accepts TLS only (a front for a `pulsar+ssl://` client); pulsar-lite's lookup
answers then get the TLS broker URL a `pulsar+ssl://` client looks for (`brokerServiceUrlTls`,
which pulsar-lite leaves out): the relay's own address again.
"""

from __future__ import annotations

import asyncio
import ssl
import struct

from relay import TcpRelay

MAGIC = b"\x0e\x01"
MESSAGE = 9  # BaseCommand.Type.MESSAGE
LOOKUP_RESPONSE = 24  # BaseCommand.Type.LOOKUP_RESPONSE, also the field number of its body


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


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        out.append((value & 0x7F) | (0x80 if value > 0x7F else 0))
        value >>= 7
        if not value:
            return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, pos


def _fields(message: bytes) -> list[tuple[int, int, bytes]]:
    """A protobuf message's fields: (number, wire type, the field's bytes with its key)."""
    fields, pos = [], 0
    while pos < len(message):
        start = pos
        key, pos = _read_varint(message, pos)
        wire = key & 7
        if wire == 0:
            _, pos = _read_varint(message, pos)
        elif wire == 1:
            pos += 8
        elif wire == 2:
            length, pos = _read_varint(message, pos)
            pos += length
        elif wire == 5:
            pos += 4
        else:
            raise ValueError(f"wire type {wire}")
        fields.append((key >> 3, wire, message[start:pos]))
    return fields


def _string_field(number: int, value: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(value)) + value


def with_tls_url(command: bytes) -> bytes:
    """A lookup answer naming its broker URL for TLS clients too, as pulsar+ssl:// of the same
    address; any other command unchanged."""
    if command_type(command) != LOOKUP_RESPONSE:
        return command
    out = b""
    for number, wire, raw in _fields(command):
        if number == LOOKUP_RESPONSE and wire == 2:
            _, body_at = _read_varint(raw, 0)
            _, body_at = _read_varint(raw, body_at)
            body = raw[body_at:]
            fields = {n: r for n, _, r in _fields(body)}
            if 1 in fields and 2 not in fields:
                _, at = _read_varint(fields[1], 0)
                _, at = _read_varint(fields[1], at)
                url = fields[1][at:]
                body += _string_field(2, url.replace(b"pulsar://", b"pulsar+ssl://", 1))
            raw = _string_field(LOOKUP_RESPONSE, body)
        out += raw
    return out


def reframe(frame: bytes, broker: bytes, relay: bytes, tls: bool = False) -> bytes:
    """One broker frame (without its 4-byte total size) as the client should get it."""
    (command_size,) = struct.unpack(">I", frame[:4])
    command = frame[4:4 + command_size]
    rest = frame[4 + command_size:]
    if broker in command:
        command = command.replace(broker, relay)
    if tls:
        command = with_tls_url(command)
    if command_type(command) == MESSAGE and rest and not rest.startswith(MAGIC):
        rest = MAGIC + struct.pack(">I", crc32c(rest)) + rest
    body = struct.pack(">I", len(command)) + command + rest
    return struct.pack(">I", len(body)) + body


class Relay(TcpRelay):
    """Listens on 127.0.0.1:`port` (4 digits) and relays to pulsar-lite on `upstream_port`."""

    def __init__(self, port: int, upstream_port: int = 6650, tls: ssl.SSLContext | None = None):
        assert len(str(port)) == len(str(upstream_port)) == 4
        super().__init__(port, upstream_port, tls)
        self.broker = f"127.0.0.1:{upstream_port}".encode()
        self.relay = f"127.0.0.1:{port}".encode()
        self.frames_reframed = 0

    @property
    def url(self) -> str:
        return f"{'pulsar+ssl' if self.tls else 'pulsar'}://127.0.0.1:{self.port}"

    async def _downstream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Broker to client, frame by frame, with the broker's address rewritten."""
        try:
            while True:
                (size,) = struct.unpack(">I", await reader.readexactly(4))
                frame = await reader.readexactly(size)
                out = reframe(frame, self.broker, self.relay, tls=self.tls is not None)
                if len(out) != size + 4:
                    self.frames_reframed += 1
                writer.write(out)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
