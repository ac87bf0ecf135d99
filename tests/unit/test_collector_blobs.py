"""collector.blobs: the one layout of the content-addressed blob store."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from collector.blobs import blob_path, iter_blobs, read_blob, write_blob


def test_write_then_read_at_the_layout_path(tmp_path: Path) -> None:
    data = b"\x89PNG fake"
    digest = write_blob(tmp_path, data)
    assert digest == hashlib.sha256(data).hexdigest()
    assert blob_path(tmp_path, digest) == tmp_path / digest[:2] / digest
    assert (tmp_path / digest[:2] / digest).read_bytes() == data
    assert read_blob(tmp_path, digest) == data
    assert iter_blobs(tmp_path) == [tmp_path / digest[:2] / digest]


def test_a_second_write_keeps_the_first_and_leaves_no_temp_file(tmp_path: Path) -> None:
    digest = write_blob(tmp_path, b"one")
    assert write_blob(tmp_path, b"other bytes", digest) == digest
    assert read_blob(tmp_path, digest) == b"one"
    assert [p.name for p in (tmp_path / digest[:2]).iterdir()] == [digest]


@pytest.mark.parametrize("name", ["../../etc/passwd", "ab", "A" * 64, "g" * 64, ""])
def test_a_name_that_is_not_a_digest_never_becomes_a_path(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError):
        blob_path(tmp_path, name)
    assert read_blob(tmp_path, name) is None


def test_missing_blob_and_missing_root(tmp_path: Path) -> None:
    assert read_blob(tmp_path, "0" * 64) is None
    assert iter_blobs(tmp_path / "nowhere") == []
