"""The write-ahead spool: order, fsync batching, the size cap, a torn tail, reopening."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector import spool as spool_module
from collector.spool import Spool, SpoolFull, encode_record, scan


def counting_fsync(calls: list[int]) -> Callable[[int], None]:
    """os.fsync that also notes each call."""
    real = os.fsync

    def fsync(fd: int) -> None:
        calls.append(fd)
        real(fd)

    return fsync


def payloads(spool: Spool) -> list[bytes]:
    return [payload for _, _, payload in spool.records()]


def test_records_come_back_in_append_order_across_segments(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=100)
    for i in range(30):
        spool.append(f"batch-{i}".encode() * 3, i + 1)
    assert len(list(tmp_path.glob("*.seg"))) > 3
    assert payloads(spool) == [f"batch-{i}".encode() * 3 for i in range(30)]
    assert spool.pending_spans == sum(range(1, 31)) and spool.pending_records == 30


def test_consume_removes_records_and_their_segments(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=100)
    for i in range(20):
        spool.append(b"x" * 40 + bytes([i]), 2)
    positions = [pos for pos, _, _ in spool.records()]
    spool.consume(positions[9])
    assert [p[-1] for p in payloads(spool)] == list(range(10, 20))
    assert spool.pending_spans == 20 and spool.pending_records == 10
    assert len(list(tmp_path.glob("*.seg"))) == 10  # one record a segment; those behind the head are gone
    spool.consume(positions[-1])
    assert payloads(spool) == [] and spool.pending_spans == 0 and spool.size_bytes == 0


def test_fsync_is_batched_not_per_append(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(spool_module.os, "fsync", counting_fsync(calls))
    spool = Spool(tmp_path, max_bytes=1 << 20)
    for i in range(50):
        spool.append(b"span batch %d" % i, 1)
    assert calls == []  # appends go to the OS only
    spool.sync()
    assert len(calls) == 1
    spool.sync()  # nothing new: no second fsync
    assert len(calls) == 1


def test_concurrent_syncs_share_fsyncs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(spool_module.os, "fsync", counting_fsync(calls))
    spool = Spool(tmp_path, max_bytes=1 << 22)
    barrier = threading.Barrier(8)

    def writer(n: int) -> None:
        barrier.wait()
        for i in range(20):
            spool.append(b"%d-%d" % (n, i), 1)
            spool.sync()

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert spool.pending_records == 160
    assert 1 <= len(calls) <= 160


def test_full_spool_drops_oldest_first_and_counts_exactly(tmp_path: Path) -> None:
    record = len(encode_record(b"p" * 50, 0))
    spool = Spool(tmp_path, max_bytes=10 * record, segment_bytes=2 * record)  # 2 records a segment
    dropped = 0
    for i in range(25):
        _, lost = spool.append(b"%02d" % i + b"p" * 48, i + 1)
        dropped += lost
    kept = [int(p[:2]) for p in payloads(spool)]
    assert kept == list(range(25 - len(kept), 25))  # the newest, in order
    assert dropped == sum(i + 1 for i in range(25 - len(kept)))  # exactly the spans of the dropped
    assert spool.pending_spans + dropped == sum(range(1, 26))
    assert spool.size_bytes <= 10 * record


def test_full_spool_refuses_when_told_not_to_drop(tmp_path: Path) -> None:
    record = len(encode_record(b"p" * 50, 0))
    spool = Spool(tmp_path, max_bytes=3 * record)
    for _ in range(3):
        spool.append(b"p" * 50, 1, drop_oldest=False)
    with pytest.raises(SpoolFull):
        spool.append(b"p" * 50, 1, drop_oldest=False)
    assert spool.pending_records == 3


def test_reopen_replays_what_a_previous_process_left(tmp_path: Path) -> None:
    first = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=64)
    for i in range(10):
        first.append(b"batch %d" % i, 3)
    positions = [pos for pos, _, _ in first.records()]
    first.consume(positions[3])
    # no close(): as after kill -9 (appends are in the OS already)
    again = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=64)
    assert payloads(again) == [b"batch %d" % i for i in range(4, 10)]
    assert again.pending_spans == 18 and again.corrupt_records == 0
    again.append(b"batch 10", 3)
    assert payloads(again)[-1] == b"batch 10"


def test_torn_tail_is_cut_off_and_counted(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20)
    spool.append(b"whole one", 4)
    spool.append(b"whole two", 5)
    spool.close()
    segment = next(tmp_path.glob("*.seg"))
    torn = encode_record(b"never finished", 7)
    with segment.open("ab") as f:
        f.write(torn[: len(torn) - 5])  # a crash mid-write
    again = Spool(tmp_path, max_bytes=1 << 20)
    assert payloads(again) == [b"whole one", b"whole two"]
    assert (again.corrupt_records, again.corrupt_spans) == (1, 7)
    again.append(b"after", 1)  # appends continue right after the good records
    assert payloads(again) == [b"whole one", b"whole two", b"after"]


def test_bit_flip_in_the_tail_fails_its_crc(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20)
    spool.append(b"good", 1)
    spool.append(b"will be damaged", 2)
    spool.close()
    segment = next(tmp_path.glob("*.seg"))
    data = bytearray(segment.read_bytes())
    data[-3] ^= 0xFF
    segment.write_bytes(bytes(data))
    again = Spool(tmp_path, max_bytes=1 << 20)
    assert payloads(again) == [b"good"]
    assert (again.corrupt_records, again.corrupt_spans) == (1, 2)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.binary(max_size=64), st.integers(0, 5000)), max_size=20), st.integers(0, 200))
def test_scan_reads_back_exactly_and_stops_at_any_cut(records: list[tuple[bytes, int]], cut: int) -> None:
    data = b"".join(encode_record(p, n) for p, n in records)
    assert [(n, p) for _, _, n, p in scan(data)] == [(n, p) for p, n in records]
    truncated = data[: max(0, len(data) - cut)]
    read = [(n, p) for _, _, n, p in scan(truncated)]
    assert read == [(n, p) for p, n in records][: len(read)]
