"""The test-only relay's framing, checked without a broker."""

import struct

from pulsar_relay import MAGIC, command_type, crc32c, reframe


def frame(command: bytes, rest: bytes = b"") -> bytes:
    body = struct.pack(">I", len(command)) + command + rest
    return body  # without the total size, as the relay reads it


def test_crc32c_matches_the_standard_check_value():
    # The CRC-32C (Castagnoli) check value of "123456789".
    assert crc32c(b"123456789") == 0xE3069283


def test_a_message_frame_gets_the_magic_number_and_checksum_section():
    command = b"\x08\x09\x4a\x00"  # type MESSAGE, an empty `message` field
    rest = struct.pack(">I", 2) + b"md" + b"payload"
    out = reframe(frame(command, rest), b"127.0.0.1:6650", b"127.0.0.1:6651")
    total, command_size = struct.unpack(">II", out[:8])
    assert total == len(out) - 4
    assert out[8:8 + command_size] == command
    section = out[8 + command_size:]
    assert section[:2] == MAGIC
    assert struct.unpack(">I", section[2:6])[0] == crc32c(rest)
    assert section[6:] == rest


def test_other_frames_pass_unchanged_except_the_broker_address():
    ping = b"\x08\x12"
    assert command_type(ping) == 18
    assert reframe(frame(ping), b"a:6650", b"a:6651")[4:] == frame(ping)
    lookup = b"\x08\x18\xc2\x01\x1a\x0a\x16pulsar://a:6650"
    out = reframe(frame(lookup), b"a:6650", b"a:6651")
    assert b"pulsar://a:6651" in out and b"6650" not in out


def test_a_frame_that_has_the_section_already_is_left_alone():
    command = b"\x08\x09"
    rest = MAGIC + b"\x00\x00\x00\x00" + b"x"
    assert reframe(frame(command, rest), b"x:1", b"x:2")[4:] == frame(command, rest)
