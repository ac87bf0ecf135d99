"""A write-ahead spool: span batches that could not be delivered yet, on disk, in order.

Used twice: by each gateway worker for batches the collector did not accept (replayed when it
answers again), and by the receiver, which acknowledges an export once the batch is here and
lets its writer drain it into DuckDB. Both survive their process being killed.

Layout: a directory of segment files ``00000001.seg``, ``00000002.seg``, … Each record is
``length u32 | n_spans u32 | crc32 u32`` (big-endian; the CRC covers the first eight header bytes
and the payload) followed by ``length`` payload bytes. Records are only ever appended; the head
(the oldest record not yet delivered) is a ``(segment, offset)`` position kept in ``head``,
rewritten atomically as records are consumed. A segment the head has passed is deleted.

- **fsync batched**: ``append`` writes to the OS at once (a ``kill -9`` loses nothing), and
  ``sync`` makes everything written so far durable with one fsync, however many records that is.
  Callers that must not acknowledge before the disk has it call ``sync(position)``; threads that
  wait while another's fsync runs find themselves covered by it (group commit).
- **size cap**: over ``max_bytes``, whole segments are dropped oldest first (``drop_oldest``), or
  the append is refused (``SpoolFull``) when the caller prefers to push back. Dropped spans are
  counted exactly (each segment keeps its span count) and returned to the caller, who records them.
- **crash**: a torn record at a segment's end (a crash mid-write) fails its CRC or is short; on
  open it is cut off and reported in ``corrupt_spans`` / ``corrupt_records``.
- **memory**: per segment a few integers; payloads are read one record at a time.

Threading: every method may be called from any thread (one lock; fsync runs outside it).
"""

from __future__ import annotations

import os
import struct
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

HEADER = struct.Struct(">III")
Position = tuple[int, int]  # (segment number, byte offset just past a record)
_SUFFIX = ".seg"
MAX_RECORD_BYTES = 256 * 1024 * 1024


class SpoolFull(Exception):
    """The record does not fit under the cap and the caller asked not to drop older ones."""


@dataclass
class _Segment:
    number: int
    size: int = 0  # bytes in the file
    spans: int = 0  # spans in records not yet consumed
    records: int = 0  # records not yet consumed


def _crc(header8: bytes, payload: bytes) -> int:
    return zlib.crc32(payload, zlib.crc32(header8))


def encode_record(payload: bytes, n_spans: int) -> bytes:
    head8 = struct.pack(">II", len(payload), n_spans)
    return head8 + struct.pack(">I", _crc(head8, payload)) + payload


def scan(data: bytes, start: int = 0) -> Iterator[tuple[int, int, int, bytes]]:
    """(offset, end, n_spans, payload) of each intact record from ``start``; stops at the first
    damaged one (its offset is the last ``end`` yielded, or ``start``)."""
    offset = start
    while offset + HEADER.size <= len(data):
        length, n_spans, crc = HEADER.unpack_from(data, offset)
        end = offset + HEADER.size + length
        if end > len(data):
            return
        payload = data[offset + HEADER.size : end]
        if _crc(data[offset : offset + 8], payload) != crc:
            return
        yield offset, end, n_spans, payload
        offset = end


class Spool:
    """See the module docstring. ``segment_bytes``: a new segment starts past this size."""

    def __init__(
        self, directory: str | Path, *, max_bytes: int = 256 * 1024 * 1024, segment_bytes: int | None = None
    ) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes or max(64 * 1024, max_bytes // 16)
        self._lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._segments: list[_Segment] = []
        self._fd: int | None = None
        self._written = 0  # appends so far (a sequence number for sync)
        self._synced = 0
        self.corrupt_records = 0
        self.corrupt_spans = 0
        self._head: Position = self._read_head()
        self._recover()

    # ------------------------------------------------------------------ open / recover
    def _read_head(self) -> Position:
        try:
            seg, off = (self.dir / "head").read_text().split()
            return int(seg), int(off)
        except (OSError, ValueError):
            return (0, 0)

    def _recover(self) -> None:
        numbers = sorted(int(p.stem) for p in self.dir.glob(f"*{_SUFFIX}") if p.stem.isdigit())
        for number in numbers:
            path = self._path(number)
            if number < self._head[0]:
                path.unlink(missing_ok=True)
                continue
            data = path.read_bytes()
            start = self._head[1] if number == self._head[0] else 0
            segment = _Segment(number, size=len(data))
            good = start
            for _, end, n_spans, _ in scan(data, start):
                segment.spans += n_spans
                segment.records += 1
                good = end
            if good < len(data):
                self._count_corrupt(data, good)
                with path.open("r+b") as f:
                    f.truncate(good)
                    os.fsync(f.fileno())
                segment.size = good
            self._segments.append(segment)
        if not self._segments:
            self._segments.append(_Segment(max(self._head[0], 1)))
            self._head = (self._segments[0].number, 0)
        elif self._head[0] < self._segments[0].number:
            self._head = (self._segments[0].number, 0)
        last = self._segments[-1]
        self._fd = os.open(self._path(last.number), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def _count_corrupt(self, data: bytes, offset: int) -> None:
        # The damaged tail: one torn record, whose header (when whole) says how many spans it held.
        self.corrupt_records += 1
        if offset + 8 <= len(data):
            length, n_spans = struct.unpack_from(">II", data, offset)
            if length <= MAX_RECORD_BYTES:
                self.corrupt_spans += n_spans

    def _path(self, number: int) -> Path:
        return self.dir / f"{number:08d}{_SUFFIX}"

    # ------------------------------------------------------------------ state
    @property
    def pending_spans(self) -> int:
        with self._lock:
            return sum(s.spans for s in self._segments)

    @property
    def pending_records(self) -> int:
        with self._lock:
            return sum(s.records for s in self._segments)

    @property
    def size_bytes(self) -> int:
        with self._lock:
            return sum(s.size for s in self._segments) - self._head[1]

    def end(self) -> Position:
        with self._lock:
            return (self._segments[-1].number, self._segments[-1].size)

    # ------------------------------------------------------------------ write
    def append(self, payload: bytes, n_spans: int, *, drop_oldest: bool = True) -> tuple[Position, int]:
        """Append one record; return (its end position, spans dropped to make room).

        Raises ``SpoolFull`` when ``drop_oldest`` is False and it does not fit.
        """
        record = encode_record(payload, n_spans)
        if len(record) > self.max_bytes:
            raise SpoolFull(f"a {len(record)}-byte record is over the spool's cap of {self.max_bytes}")
        dropped = 0
        with self._lock:
            if self._size() + len(record) > self.max_bytes:
                if not drop_oldest:
                    raise SpoolFull(f"spool {self.dir} is full ({self.max_bytes} bytes)")
                dropped = self._drop_oldest(len(record))
            last = self._segments[-1]
            if last.size and last.size + len(record) > self.segment_bytes:
                last = self._rotate()
            assert self._fd is not None
            os.write(self._fd, record)
            last.size += len(record)
            last.spans += n_spans
            last.records += 1
            self._written += 1
            return (last.number, last.size), dropped

    def _size(self) -> int:
        return sum(s.size for s in self._segments) - self._head[1]

    def _rotate(self) -> _Segment:
        assert self._fd is not None
        os.fsync(self._fd)  # what was written there stays durable once it is no longer the tail
        os.close(self._fd)
        segment = _Segment(self._segments[-1].number + 1)
        self._segments.append(segment)
        self._fd = os.open(self._path(segment.number), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        return segment

    def _drop_oldest(self, need: int) -> int:
        """Delete whole segments from the head until ``need`` more bytes fit; spans dropped."""
        dropped = 0
        while self._size() + need > self.max_bytes and (len(self._segments) > 1 or self._segments[0].records):
            oldest = self._segments[0]
            dropped += oldest.spans
            if len(self._segments) == 1:
                self._rotate()
            self._segments.pop(0)
            self._path(oldest.number).unlink(missing_ok=True)
            self._set_head((self._segments[0].number, 0))
        return dropped

    def sync(self) -> None:
        """fsync everything appended so far (one fsync covers every record written before it)."""
        with self._lock:
            target, fd = self._written, self._fd
        if target <= self._synced:
            return
        with self._sync_lock:
            if target <= self._synced:
                return  # another thread's fsync, started after our append, covered it
            with self._lock:
                target, fd = self._written, self._fd
            if fd is not None:
                try:
                    os.fsync(fd)
                except OSError:
                    if fd == self._fd:
                        raise
                    # rotated (and so fsynced) and closed meanwhile
            self._synced = max(self._synced, target)

    # ------------------------------------------------------------------ read / consume
    def records(self, limit: Position | None = None) -> Iterator[tuple[Position, int, bytes]]:
        """(end position, n_spans, payload) from the head on, oldest first, up to ``limit``."""
        with self._lock:
            head = self._head
            numbers = [s.number for s in self._segments]
        for number in numbers:
            if limit is not None and number > limit[0]:
                return
            try:
                data = self._path(number).read_bytes()
            except FileNotFoundError:
                continue  # dropped meanwhile
            start = head[1] if number == head[0] else 0
            for _, end, n_spans, payload in scan(data, start):
                if limit is not None and (number, end) > limit:
                    return
                yield (number, end), n_spans, payload

    def consume(self, through: Position) -> None:
        """Forget every record up to and including the one ending at ``through``."""
        with self._lock:
            if through <= self._head:
                return
            while len(self._segments) > 1 and self._segments[0].number < through[0]:
                self._path(self._segments.pop(0).number).unlink(missing_ok=True)
            segment = self._segments[0]
            if segment.number != through[0]:
                return  # that segment was dropped already
            start = self._head[1] if self._head[0] == segment.number else 0
            done_spans, done_records = self._count(segment.number, start, through[1])
            segment.spans -= done_spans
            segment.records -= done_records
            if through[1] >= segment.size and len(self._segments) > 1:
                self._segments.pop(0)
                self._path(segment.number).unlink(missing_ok=True)
                self._set_head((self._segments[0].number, 0))
            else:
                self._set_head(through)

    def _count(self, number: int, start: int, stop: int) -> tuple[int, int]:
        with self._path(number).open("rb") as f:
            f.seek(start)
            data = f.read(stop - start)
        spans = records = 0
        for _, _, n_spans, _ in scan(data):
            spans += n_spans
            records += 1
        return spans, records

    def _set_head(self, head: Position) -> None:
        self._head = head
        tmp = self.dir / "head.tmp"
        tmp.write_text(f"{head[0]} {head[1]}")
        os.replace(tmp, self.dir / "head")

    def close(self) -> None:
        self.sync()
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
