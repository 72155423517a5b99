"""Per-session temporary areas: private, owned by us, and collected only when their process is gone."""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from installengine.eventlog import SessionInfo
from installengine.snapshots import TargetError, create_area, gc, remove_area
from installengine.snapshots.tempdir import SESSION_FILE, temp_root
from installengine.statemachine import InstallEngine

CREATE_AREA = """
from installengine.eventlog import SessionInfo
from installengine.snapshots import create_area
print(create_area(SessionInfo.current("test")))
"""


@pytest.fixture(autouse=True)
def tmpdir_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    base = tmp_path / "tmp"
    base.mkdir()
    monkeypatch.setenv("INSTALLENGINE_TMPDIR", str(base))
    return base


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def area_of_exited_child() -> Path:
    """An area made by a real child process that has exited since."""
    done = subprocess.run([sys.executable, "-c", CREATE_AREA], capture_output=True, text=True,
                          check=True, env=os.environ.copy())
    return Path(done.stdout.strip())


def test_the_root_is_per_user_under_installengine_tmpdir(tmpdir_env):
    assert temp_root() == tmpdir_env / f"installengine-{os.getuid()}"


def test_an_area_is_private_and_records_its_session(tmpdir_env):
    session = SessionInfo.current("test")
    area = create_area(session)
    assert area == temp_root() / session.id
    assert mode(temp_root()) == 0o700
    assert mode(area) == 0o700
    assert area.stat().st_uid == os.getuid()
    record = area / SESSION_FILE
    assert mode(record) == 0o600
    assert SessionInfo.from_json(orjson.loads(record.read_bytes())) == session


def test_a_loose_root_is_tightened_to_0700(tmpdir_env):
    root = temp_root()
    root.mkdir(mode=0o755)
    os.chmod(root, 0o755)
    create_area(SessionInfo.current("test"))
    assert mode(root) == 0o700


def test_an_existing_area_is_refused(tmpdir_env):
    session = SessionInfo.current("test")
    create_area(session)
    with pytest.raises(TargetError, match="already exists"):
        create_area(session)


def test_a_symlinked_root_is_refused(tmpdir_env, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    temp_root().symlink_to(elsewhere)
    with pytest.raises(TargetError, match="symlink"):
        create_area(SessionInfo.current("test"))
    assert list(elsewhere.iterdir()) == []


def test_a_root_owned_by_someone_else_is_refused(tmpdir_env):
    if os.getuid() != 0:
        pytest.skip("chown to another user needs root")
    root = temp_root()
    root.mkdir(mode=0o700)
    os.chown(root, 65534, 65534)
    with pytest.raises(TargetError, match="owned by uid 65534"):
        create_area(SessionInfo.current("test"))


def test_remove_area_removes_it_and_tolerates_a_missing_one(tmpdir_env):
    area = create_area(SessionInfo.current("test"))
    (area / "log.db").write_bytes(b"x")
    remove_area(area)
    assert not area.exists()
    remove_area(area)


def test_gc_removes_the_area_of_an_exited_process_only(tmpdir_env):
    dead = area_of_exited_child()
    alive = create_area(SessionInfo.current("test"))  # this very process
    assert dead.is_dir()
    assert gc(dry_run=True) == [dead]
    assert dead.is_dir()  # a dry run removes nothing
    assert gc() == [dead]
    assert not dead.exists()
    assert alive.is_dir()
    assert gc() == []


def test_gc_keeps_the_area_of_a_running_child_until_it_is_killed(tmpdir_env):
    child = subprocess.Popen(
        [sys.executable, "-c", CREATE_AREA + "import sys; sys.stdout.flush(); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    try:
        assert child.stdout is not None
        area = Path(child.stdout.readline().strip())
        assert gc() == []
        assert area.is_dir()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert gc() == [area]


def test_gc_treats_a_reused_pid_as_dead(tmpdir_env):
    me = SessionInfo.current("test")
    assert me.start_ticks is not None
    impostor = dataclasses.replace(me, id="reusedpid000", start_ticks=me.start_ticks + 1)
    area = create_area(impostor)
    assert gc() == [area]


def test_gc_keeps_areas_of_sessions_on_other_hosts(tmpdir_env):
    other = dataclasses.replace(SessionInfo.current("test"), id="otherhost000",
                                host=socket.gethostname() + "-elsewhere", pid=1)
    area = create_area(other)
    assert gc() == []
    assert area.is_dir()


def test_gc_removes_an_area_without_a_readable_session_record(tmpdir_env):
    # No readable record means no session can claim it: a half-created or damaged area.
    root = temp_root()
    root.mkdir(mode=0o700)
    blank = root / "blank"
    blank.mkdir()
    garbled = root / "garbled"
    garbled.mkdir()
    (garbled / SESSION_FILE).write_bytes(b"{not json")
    assert sorted(gc()) == [blank, garbled]


def test_gc_never_follows_symlinks_or_touches_files(tmpdir_env, tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep").write_text("precious")
    root = temp_root()
    root.mkdir(mode=0o700)
    (root / "link").symlink_to(victim)
    (root / "file").write_text("x")
    assert gc() == []
    assert (victim / "keep").read_text() == "precious"


def test_gc_of_a_missing_or_symlinked_root_does_nothing(tmpdir_env, tmp_path):
    assert gc() == []
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "area").mkdir()
    temp_root().symlink_to(elsewhere)
    assert gc() == []
    assert (elsewhere / "area").is_dir()


def test_an_engine_without_target_removes_its_area_on_close(tmpdir_env):
    engine = InstallEngine()
    area = engine.log.path.parent
    assert area.parent == temp_root()
    assert mode(area) == 0o700
    engine.close()
    assert not area.exists()


def test_keep_volatile_keeps_the_area_and_gc_collects_it_once_the_process_is_gone(tmpdir_env):
    code = ("from installengine.statemachine import InstallEngine\n"
            "e = InstallEngine(keep_volatile=True)\nprint(e.log.path.parent)\ne.close()\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, env=os.environ.copy())
    area = Path(done.stdout.strip())
    assert (area / "log.db").is_file()
    assert gc() == [area]


def test_the_area_of_a_killed_engine_is_collected(tmpdir_env):
    code = ("import os, signal\nfrom installengine.statemachine import InstallEngine\n"
            "e = InstallEngine()\ne.cache['a'] = 1\nprint(e.log.path.parent, flush=True)\n"
            "os.kill(os.getpid(), signal.SIGKILL)\n")
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=False, env=os.environ.copy())
    assert child.returncode == -signal.SIGKILL
    area = Path(child.stdout.strip())
    assert area.is_dir()
    live = InstallEngine()
    try:
        assert gc() == [area]
        assert live.log.path.parent.is_dir()
    finally:
        live.close()
