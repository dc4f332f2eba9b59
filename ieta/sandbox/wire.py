"""Length-prefixed messages between sandbox processes, and a decoder that yields plain data only.

Senders use ``marshal`` version 2 (no back-references).  Receivers never call ``marshal.loads`` on
bytes an untrusted process wrote: ``loads`` below accepts exactly None, bool, int, float, complex,
str, bytes, tuple, list, dict, set and frozenset, bounded in size and depth, and raises ``BadData``
on anything else (code objects, references, truncation, trailing bytes, unhashable keys).
Its time is linear in the message (big ints too), and a ``Budget`` bounds what it may spend (items,
big ints' digits, bytes) across the messages it is passed to: past it, ``OverBudget`` (a ``BadData``),
raised before the values that would exceed it are decoded.
Imported by both sides (no ``ieta`` imports).
"""

import gc
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


class OverBudget(BadData):
    """Well formed as far as read, but decoding it would spend more than is left of its ``Budget``."""


CONTAINER = 4  # what a container costs a Budget (its items apart): decoding one costs about as much as 4 numbers


class Budget:
    """What ``loads`` may spend on all the messages it is given this budget for: ``items`` (each value decoded; a
    container, a dict included, counts ``CONTAINER``, each of a dict's keys and values one), ``int_digits`` (15-bit
    digits of the ints past 32 bits) and ``nbytes`` (of the messages).  Once over it, every later message is too."""

    def __init__(self, items: int, int_digits: int, nbytes: int):
        self.limits = (items, int_digits, nbytes)
        self.left = [items, int_digits, nbytes]
        self.over = None  # why the budget is spent (``OverBudget``'s message), once it is

    def why(self, what: int) -> str:
        return f"over the decoding budget of {self.limits[what]} {('items', 'int digits', 'bytes')[what]}"


# what the judge decodes of each message from the candidate's process (and what that process copies and sends of each
# answer): a few tenths of a second of decoding, whatever the answer is; an answer of 10**6 numbers, 250,000 lists or
# ints of 3.9 million bits fits. Per message, not per sample: a test that calls 2,000 times for lists of 600 is honest
# (shared, the budget failed a correct solution there); many answers near it run the sample's own clock out
ANSWERS = (1 << 20, 1 << 18, 1 << 26)
_UNBOUNDED = [float("inf")] * 3


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


def loads(data: bytes, budget: Budget | None = None):
    """Decode one marshal (version <= 2) value of plain data; ``BadData`` otherwise, and ``OverBudget`` (a
    ``BadData``) where decoding it would spend more than is left of ``budget`` (none: unbounded, for trusted
    senders)."""
    left = budget.left if budget is not None else list(_UNBOUNDED)
    collect = gc.isenabled()
    gc.disable()  # the containers it makes would start collections: a third of the time of a list of lists
    try:
        if budget is not None and budget.over is not None:
            raise OverBudget(budget.over)
        _spend(left, 2, len(data))
        _spend(left, 0, 1)  # the value itself; a container spends its items' share before decoding them
        value, pos = _load(memoryview(data), 0, 0, left)
    except _Spent as e:
        budget.over = budget.why(e.args[0])
        raise OverBudget(budget.over) from None
    except (IndexError, struct.error, UnicodeDecodeError, TypeError, RecursionError, MemoryError) as e:
        raise BadData(f"malformed data: {type(e).__name__}") from None
    finally:
        if collect:
            gc.enable()
    if pos != len(data):
        raise BadData("trailing bytes")
    return value


class _Spent(Exception):
    """Raised by ``_spend`` with the index of what is spent (``loads`` turns it into ``OverBudget``)."""


def _spend(left, what, n):
    left[what] -= n
    if left[what] < 0:
        raise _Spent(what)


def _size(buf, pos):
    n = _INT.unpack_from(buf, pos)[0]
    if n < 0 or n > len(buf):
        raise BadData("bad length")
    return n, pos + 4


def int_from_digits(raw, count: int) -> int:
    """The int whose little-endian 15-bit digits (marshal's) are the ``count`` 16-bit words of ``raw``; linear in
    spirit (``log count`` passes of whole-number masks and shifts), where folding digit by digit is quadratic."""
    v = int.from_bytes(raw, "little")  # digit i at bit 16 i
    if v & int.from_bytes(b"\x00\x80" * count, "little"):
        raise BadData("bad int digit")
    size = 1
    while size < count:
        size *= 2
    width, k = 16, 1  # lanes of ``width`` bits, each holding ``k`` digits packed 15 bits apart at its bottom
    while k < size:
        low = int.from_bytes((b"\xff" * (width // 8) + bytes(width // 8)) * (size * 16 // (2 * width)), "little")
        v = (v & low) | ((v >> width) & low) << (15 * k)
        width, k = 2 * width, 2 * k
    return v


_SCALAR = {0x4E: None, 0x54: True, 0x46: False}  # N, T, F
_KINDS = {0x28: tuple, 0x5B: list, 0x3C: set, 0x3E: frozenset}  # ( [ < >


def _load(buf, pos, depth, left):
    """The value at ``pos`` and the position after it; its own item is already spent, its contents are not."""
    if depth > MAX_DEPTH:
        raise BadData("nesting too deep")
    code = buf[pos]
    pos += 1
    if code in _KINDS:
        n, pos = _size(buf, pos)
        _spend(left, 0, n + CONTAINER - 1)
        items = []
        append = items.append
        depth += 1
        for _ in range(n):
            c = buf[pos]  # the commonest items inline: a call costs as much as decoding such an item
            if c == 0x69:  # i
                append(_INT.unpack_from(buf, pos + 1)[0])
                pos += 5
            elif c == 0x75 or c == 0x74:  # u / t str
                size = _INT.unpack_from(buf, pos + 1)[0]
                pos += 5
                if size < 0 or pos + size > len(buf):
                    raise BadData("truncated string")
                append(str(buf[pos:pos + size], "utf-8", "surrogatepass"))
                pos += size
            elif c in _SCALAR:
                append(_SCALAR[c])
                pos += 1
            elif c == 0x67:  # g
                append(_DBL.unpack_from(buf, pos + 1)[0])
                pos += 9
            else:
                item, pos = _load(buf, pos, depth, left)
                append(item)
        return (items if code == 0x5B else _KINDS[code](items)), pos
    if code == 0x69:  # i
        return _INT.unpack_from(buf, pos)[0], pos + 4
    if code in _SCALAR:
        return _SCALAR[code], pos
    if code in (0x73, 0x75, 0x74):  # s bytes, u / t str
        n, pos = _size(buf, pos)
        if pos + n > len(buf):
            raise BadData("truncated string")
        raw = buf[pos:pos + n]
        return (bytes(raw) if code == 0x73 else str(raw, "utf-8", "surrogatepass")), pos + n
    if code == 0x67:  # g
        return _DBL.unpack_from(buf, pos)[0], pos + 8
    if code == 0x6C:  # l: 15-bit digits, signed count
        n = _INT.unpack_from(buf, pos)[0]
        pos += 4
        count = abs(n)
        if pos + 2 * count > len(buf):
            raise BadData("truncated int")
        _spend(left, 1, count)
        value = int_from_digits(buf[pos:pos + 2 * count], count)
        return (-value if n < 0 else value), pos + 2 * count
    if code == 0x79:  # y
        re_, im = _CPX.unpack_from(buf, pos)
        return complex(re_, im), pos + 16
    if code == 0x7B:  # { dict, ended by 0
        _spend(left, 0, CONTAINER - 1)
        d = {}
        depth += 1
        while buf[pos] != 0x30:
            _spend(left, 0, 2)
            k, pos = _load(buf, pos, depth, left)
            v, pos = _load(buf, pos, depth, left)
            d[k] = v
        return d, pos + 1
    raise BadData(f"type code {code:#x} is not plain data")
