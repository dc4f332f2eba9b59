"""Length-prefixed messages between sandbox processes, and a decoder that yields plain data only.

Senders use ``marshal`` version 2 (no back-references).  Receivers never call ``marshal.loads`` on
bytes an untrusted process wrote: ``loads`` below accepts exactly None, bool, int, float, complex,
str, bytes, tuple, list, dict, set and frozenset, bounded in size and depth, and raises ``BadData``
on anything else (code objects, references, truncation, trailing bytes, unhashable keys).
Imported by both sides (no ``ieta`` imports).
"""

import marshal
import os
import select
import struct
import time

VERSION = 2
MAX_DEPTH = 200
_INT, _DBL, _CPX = struct.Struct("<i"), struct.Struct("<d"), struct.Struct("<dd")


class BadData(ValueError):
    """The bytes are not a well-formed plain-data message."""


def dumps(obj) -> bytes:
    body = marshal.dumps(obj, VERSION)
    return len(body).to_bytes(4, "little") + body


def write(fd: int, obj) -> None:
    data = memoryview(dumps(obj))
    while data:
        data = data[os.write(fd, data):]


def read_exact(fd: int, n: int, deadline: float | None = None) -> bytes | None:
    """``n`` bytes, or ``None`` at EOF (or when ``deadline`` passes)."""
    buf = bytearray()
    while len(buf) < n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
        chunk = os.read(fd, min(n - len(buf), 1 << 20))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def read_body(fd: int, limit: int, deadline: float | None = None) -> bytes | None:
    """One message body (still encoded); ``None`` at EOF; ``BadData`` if it announces more than ``limit``."""
    head = read_exact(fd, 4, deadline)
    if head is None:
        return None
    size = int.from_bytes(head, "little")
    if size > limit:
        raise BadData(f"message of {size} bytes exceeds the {limit}-byte limit")
    body = read_exact(fd, size, deadline)
    if body is None:
        raise BadData("truncated message")
    return body


def frames(raw: bytes):
    """Bodies of the length-prefixed messages in ``raw``; ``BadData`` on a truncated one."""
    pos = 0
    while pos < len(raw):
        if pos + 4 > len(raw):
            raise BadData("truncated length prefix")
        size = int.from_bytes(raw[pos:pos + 4], "little")
        if pos + 4 + size > len(raw):
            raise BadData("truncated message")
        yield raw[pos + 4:pos + 4 + size]
        pos += 4 + size


def loads(data: bytes):
    """Decode one marshal (version <= 2) value of plain data; ``BadData`` otherwise."""
    try:
        value, pos = _load(memoryview(data), 0, 0)
    except (IndexError, struct.error, UnicodeDecodeError, TypeError, RecursionError, MemoryError) as e:
        raise BadData(f"malformed data: {type(e).__name__}") from None
    if pos != len(data):
        raise BadData("trailing bytes")
    return value


def _size(buf, pos):
    n = _INT.unpack_from(buf, pos)[0]
    if n < 0 or n > len(buf):
        raise BadData("bad length")
    return n, pos + 4


def _load(buf, pos, depth):
    if depth > MAX_DEPTH:
        raise BadData("nesting too deep")
    code = buf[pos]
    pos += 1
    if code == 0x4E:  # N
        return None, pos
    if code == 0x54:  # T
        return True, pos
    if code == 0x46:  # F
        return False, pos
    if code == 0x69:  # i
        return _INT.unpack_from(buf, pos)[0], pos + 4
    if code == 0x67:  # g
        return _DBL.unpack_from(buf, pos)[0], pos + 8
    if code == 0x79:  # y
        re_, im = _CPX.unpack_from(buf, pos)
        return complex(re_, im), pos + 16
    if code == 0x6C:  # l: 15-bit digits, signed count
        n = _INT.unpack_from(buf, pos)[0]
        pos += 4
        count = abs(n)
        if pos + 2 * count > len(buf):
            raise BadData("truncated int")
        value = 0
        for i in range(count - 1, -1, -1):
            d = buf[pos + 2 * i] | buf[pos + 2 * i + 1] << 8
            if d >= 1 << 15:
                raise BadData("bad int digit")
            value = value << 15 | d
        return (-value if n < 0 else value), pos + 2 * count
    if code in (0x73, 0x75, 0x74):  # s bytes, u / t str
        n, pos = _size(buf, pos)
        raw = bytes(buf[pos:pos + n])
        if len(raw) != n:
            raise BadData("truncated string")
        return (raw if code == 0x73 else raw.decode("utf-8", "surrogatepass")), pos + n
    if code in (0x28, 0x5B, 0x3C, 0x3E):  # ( tuple, [ list, < set, > frozenset
        n, pos = _size(buf, pos)
        items = []
        for _ in range(n):
            item, pos = _load(buf, pos, depth + 1)
            items.append(item)
        kind = {0x28: tuple, 0x5B: list, 0x3C: set, 0x3E: frozenset}[code]
        return kind(items), pos
    if code == 0x7B:  # { dict, ended by 0
        d = {}
        while buf[pos] != 0x30:
            k, pos = _load(buf, pos, depth + 1)
            v, pos = _load(buf, pos, depth + 1)
            d[k] = v
        return d, pos + 1
    raise BadData(f"type code {code:#x} is not plain data")
