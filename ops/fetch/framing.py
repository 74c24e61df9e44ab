"""Byte framing: a binary stream cut into blocks of whole lines, with bounded memory.

A line longer than MAX_LINE_BYTES is never accumulated; an `OverlongLine` marker keeps
only its size, so the parsers count it as `too_long`.
"""

from __future__ import annotations

MAX_LINE_BYTES = 1_048_576


class OverlongLine(bytes):
    """Stands in for a line too long to keep in memory; only its size is kept."""

    def __new__(cls, size: int) -> "OverlongLine":
        obj = super().__new__(cls, b"")
        obj.size = size
        return obj

    def __len__(self) -> int:  # the parsers' length check sees the real size
        return self.size


def read_line_blocks(stream, block_size: int = 1 << 20, max_line: int = MAX_LINE_BYTES):
    """Yield (first_line_no, [line bytes...]) from a binary stream, a block at a time.

    Memory stays bounded by the block size plus one kept line: a line longer than
    `max_line` is never accumulated, it is replaced by an `OverlongLine` marker.
    """
    for line_no, payload in read_raw_blocks(stream, block_size, max_line):
        lines = split_lines(payload)
        if lines:
            yield line_no, lines



def read_raw_blocks(stream, block_size: int = 1 << 20, max_line: int = MAX_LINE_BYTES, count_lines: bool = True):
    """Yield (first_line_no, payload) from a binary stream, a block at a time.

    `payload` is normally one bytes object holding whole lines, each ending in b"\\n"
    (a missing final newline is added); a line longer than `max_line` that never fit
    in memory is instead yielded alone as `[OverlongLine(size)]`. Splitting a bytes
    payload on b"\\n" (and stripping a trailing \\r per line) gives exactly the lines
    `read_line_blocks` yields: same bounded memory, same line numbers. With
    `count_lines=False` the line numbers are not kept: the caller counts the lines.
    """
    line_no = 1
    carry = b""
    skipping = 0
    while True:
        block = stream.read(block_size)
        if not block:
            break
        if skipping:
            nl = block.find(b"\n")
            if nl < 0:
                skipping += len(block)
                continue
            yield line_no, [OverlongLine(skipping + nl)]
            line_no += 1
            block = block[nl + 1 :]
            skipping = 0
        data = carry + block if carry else block
        cut = data.rfind(b"\n")
        if cut < 0:
            carry = data
        else:
            carry = data[cut + 1 :]
            body = data[: cut + 1]
            yield line_no, body
            if count_lines:
                line_no += body.count(b"\n")
        if len(carry) > max_line:
            skipping, carry = len(carry), b""
    if skipping:
        yield line_no, [OverlongLine(skipping)]
    elif carry:
        yield line_no, carry + b"\n"


def split_lines(payload) -> list:
    """The lines of a `read_raw_blocks` payload, as `read_line_blocks` would give them."""
    if isinstance(payload, list):
        return payload
    lines = payload.split(b"\n")
    lines.pop()  # the payload ends with a newline
    if b"\r" in payload:
        lines = [ln[:-1] if ln.endswith(b"\r") else ln for ln in lines]
    return lines
