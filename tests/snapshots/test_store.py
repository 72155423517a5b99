"""Snapshot files: named by seq and digest, written atomically, read only as regular files."""

from __future__ import annotations

import os
import stat
import subprocess
import threading
from pathlib import Path

import pytest
from installengine.snapshots import SnapshotStore, TargetError, state_digest

DIGEST = state_digest({"a": 1})


@pytest.fixture
def store(tmp_path: Path) -> SnapshotStore:
    return SnapshotStore(tmp_path / "state" / "snapshots", durable=True)


def test_files_are_named_by_seq_and_digest(store):
    path = store.path_for(42, DIGEST)
    assert path.name == f"000000000042-{DIGEST}.json"
    assert path.parent == store.directory


def test_write_creates_a_private_file_and_directory(store):
    path = store.write(7, DIGEST, b'{"a":1}')
    assert path == store.path_for(7, DIGEST)
    assert path.read_bytes() == b'{"a":1}'
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.directory.stat().st_mode) == 0o700
    assert [p.name for p in store.directory.iterdir()] == [path.name]  # no temp file left


def test_write_replaces_a_file_of_the_same_name_whole(store):
    store.write(7, DIGEST, b"x" * 100_000)
    store.write(7, DIGEST, b'{"a":1}')
    assert store.read(7, DIGEST) == b'{"a":1}'
    assert len(list(store.directory.iterdir())) == 1


def test_volatile_store_writes_the_same_files(tmp_path):
    store = SnapshotStore(tmp_path / "snaps", durable=False)
    store.write(1, DIGEST, b"{}")
    assert store.read(1, DIGEST) == b"{}"


def test_large_files_are_written_completely(store):
    data = os.urandom(3 * 1024 * 1024)
    store.write(3, DIGEST, data)
    assert store.read(3, DIGEST) == data


def test_read_of_a_missing_file_is_none(store):
    assert store.read(1, DIGEST) is None
    assert not store.has(1, DIGEST)


def test_read_refuses_a_symlink(store, tmp_path):
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_bytes(b'{"a":1}')
    store.directory.mkdir(parents=True)
    store.path_for(5, DIGEST).symlink_to(elsewhere)
    assert store.read(5, DIGEST) is None


def test_read_refuses_a_directory(store):
    store.path_for(5, DIGEST).mkdir(parents=True)
    assert store.read(5, DIGEST) is None


def test_read_of_a_fifo_returns_none_instead_of_hanging(store):
    store.directory.mkdir(parents=True)
    fifo = store.path_for(5, DIGEST)
    os.mkfifo(fifo)
    result: list[bytes | None] = []
    reader = threading.Thread(target=lambda: result.append(store.read(5, DIGEST)), daemon=True)
    reader.start()
    reader.join(5)
    if reader.is_alive():
        # Unblock the reader before failing, so the thread does not outlive the test.
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
        reader.join(5)
        pytest.fail("reading a FIFO in the snapshot directory blocked")
    assert result == [None]


def test_files_lists_snapshot_files_by_seq_and_ignores_strays(store):
    store.write(20, DIGEST, b"{}")
    store.write(3, DIGEST, b"{}")
    (store.directory / "notes.txt").write_text("stray")
    (store.directory / f".tmp-{'0' * 32}").write_bytes(b"half")
    (store.directory / f"{1:012d}-{DIGEST}.json").symlink_to("/etc/hostname")
    found = store.files()
    assert [f.seq for f in found] == [1, 3, 20]
    assert all(f.digest == DIGEST for f in found)
    assert store.read(1, DIGEST) is None  # listed for verify, but never read through


def test_files_of_a_missing_directory_is_empty(store):
    assert store.files() == []


def test_remove_says_whether_there_was_a_file(store):
    store.write(1, DIGEST, b"{}")
    assert store.remove(1, DIGEST) is True
    assert store.remove(1, DIGEST) is False
    assert not store.has(1, DIGEST)


def test_a_state_directory_that_is_a_symlink_is_refused(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    store = SnapshotStore(tmp_path / "link", durable=True)
    with pytest.raises(TargetError, match="symlink"):
        store.write(1, DIGEST, b"{}")


@pytest.fixture
def tiny_disk(tmp_path: Path):
    """A real 64 KB tmpfs, for a real ENOSPC; skipped where mounting is not allowed."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_a_full_disk_raises_target_error_and_leaves_no_partial_file(tiny_disk):
    store = SnapshotStore(tiny_disk / "snapshots", durable=True)
    store.write(1, DIGEST, b"{}")
    with pytest.raises(TargetError, match="free space"):
        store.write(2, DIGEST, b"x" * 1024 * 1024)
    assert [p.name for p in store.directory.iterdir()] == [store.path_for(1, DIGEST).name]
    assert store.read(1, DIGEST) == b"{}"
