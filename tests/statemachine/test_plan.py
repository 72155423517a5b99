"""Plan files: loading, validation with PlanError(path, key), and registering into an engine."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from installengine.statemachine import InstallEngine, PlanError
from installengine.statemachine.plan import load_plan, register_plan

STEPS = '''
from installengine.statemachine import Checkpoint


def configure(ctx, hostname, *, timezone="UTC"):
    ctx.cache["hostname"] = hostname


class Partition(Checkpoint):
    def __init__(self, name, disk):
        super().__init__(name)
        self.disk = disk

    def execute(self, ctx):
        ctx.cache["disk"] = self.disk
'''

GOOD = '''
[engine]
target = "dir:./target"
stop_on_error = false

[[checkpoint]]
name = "partition"
call = "{module}:Partition"
args = ["/dev/sda"]
description = "Partition the disk"
version = "2"

[[checkpoint]]
name = "configure"
call = "{module}:configure"
args = ["box"]
kwargs = {{ timezone = "Europe/Paris" }}
loglevel = "debug"
'''


def write(tmp_path: Path, text: str, *, module: str | None = None) -> Path:
    """A plan next to its own steps module (named after the test, so imports never collide)."""
    module = module or f"plansteps_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{module}.py").write_text(STEPS)
    path = tmp_path / "plan.toml"
    path.write_text(text.format(module=module))
    return path


def test_load_plan_reads_engine_settings_and_checkpoints_in_order(tmp_path):
    plan = load_plan(write(tmp_path, GOOD))
    assert plan.path == tmp_path / "plan.toml"
    assert plan.target == f"dir:{tmp_path / 'target'}"  # relative to the plan's directory
    assert plan.stop_on_error is False
    assert plan.names == ["partition", "configure"]
    part, conf = plan.checkpoints
    assert (part.args, part.kwargs, part.description, part.version) == (
        ["/dev/sda"], {}, "Partition the disk", "2")
    assert (conf.args, conf.kwargs, conf.loglevel) == (["box"], {"timezone": "Europe/Paris"},
                                                         "debug")
    assert [r.name for r in plan.registrations] == plan.names
    assert len({r.fingerprint for r in plan.registrations}) == 2


def test_defaults_without_an_engine_table(tmp_path):
    plan = load_plan(write(tmp_path, '[[checkpoint]]\nname = "c"\ncall = "{module}:configure"\n'
                                     'args = ["h"]\n'))
    assert plan.target is None
    assert plan.stop_on_error is True
    assert plan.checkpoints[0].description == ""
    assert plan.checkpoints[0].version is None


@pytest.mark.parametrize(("spec", "expected"), [
    ("dir:/abs/path", "dir:/abs/path"),
    ("zfs:rpool/install", "zfs:rpool/install"),
    ("state:state-dir", "state:{base}/state-dir"),
    ("btrfs:../sub", "btrfs:{parent}/sub"),
])
def test_target_paths_are_relative_to_the_plan(tmp_path, spec, expected):
    text = (f'[engine]\ntarget = "{spec}"\n[[checkpoint]]\nname = "c"\n'
            'call = "{module}:configure"\nargs = ["h"]\n')
    plan = load_plan(write(tmp_path, text))
    assert plan.target == expected.format(base=tmp_path, parent=tmp_path.parent)


def test_the_plan_directory_is_importable_only_while_loading(tmp_path):
    path = write(tmp_path, GOOD)
    load_plan(path)
    assert str(tmp_path) not in sys.path


@pytest.mark.parametrize(("text", "key", "fragment"), [
    ('[[checkpoint]]\nname = "a"\ncall = "{module}:configure"\nargs=["h"]\nextra = 1\n',
     "checkpoint[0].extra", "unknown key checkpoint[0].extra"),
    ('[engine]\ntarget = 5\n', "engine.target", "engine.target must be a string, not an integer 5"),
    ('engine = 3\n', "engine", "engine must be a table"),
    ('checkpoint = "x"\n', "checkpoint", "checkpoint must be an array of tables"),
    ('[[checkpoint]]\ncall = "{module}:configure"\n', "checkpoint[0].name", "has no name"),
    ('[[checkpoint]]\nname = ""\ncall = "{module}:configure"\n', "checkpoint[0].name",
     "checkpoint name '' is invalid"),
    ('[[checkpoint]]\nname = 7\ncall = "{module}:configure"\n', "checkpoint[0].name",
     "checkpoint[0].name must be a string, not an integer 7"),
    ('[[checkpoint]]\nname = "a"\ncall = "{module}:configure"\nkwargs = []\n',
     "checkpoint[0].kwargs", "must be a table, not an array"),
    ('[[checkpoint]]\nname = "a"\ncall = "{module}"\n', "checkpoint[0].call",
     "must look like 'package.module:ClassOrFunction'"),
    ('[[checkpoint]]\nname = "a"\ncall = "{module}:Nope"\n', "checkpoint[0].call",
     "has no 'Nope'"),
    ('[[checkpoint]]\nname = "a"\ncall = "{module}:Partition"\n', "checkpoint[0].args",
     "missing a required argument: 'disk'"),
    ('[[checkpoint]]\nname = "a"\ncall = "{module}:configure"\nargs = ["h"]\n'
     '[[checkpoint]]\nname = "a"\ncall = "{module}:configure"\nargs = ["h"]\n',
     "checkpoint[1].name", "'a' is already the name of checkpoint[0]"),
    ('[[checkpoint]]\nname = "a"\ncall = "{module}:configure"\nargs = ["h"]\n'
     'loglevel = "chatty"\n', "checkpoint[0].loglevel", "is not a logging level"),
])
def test_plan_errors_name_the_file_and_the_key(tmp_path, text, key, fragment):
    path = write(tmp_path, text)
    with pytest.raises(PlanError) as caught:
        load_plan(path)
    err = caught.value
    assert err.path == str(path)
    assert err.key == key
    assert str(err).startswith(f"{path}: ")
    assert fragment in str(err)
    assert "\n" not in str(err)


def test_toml_syntax_error_gives_the_line(tmp_path):
    path = write(tmp_path, '[[checkpoint]]\nname = "a"\n\ncall = "unterminated\n')
    with pytest.raises(PlanError, match=r"invalid TOML: .*\(at line 4, column \d+\)") as caught:
        load_plan(path)
    assert caught.value.key is None


def test_a_toml_error_at_the_end_of_the_file_names_its_last_line(tmp_path):
    path = write(tmp_path, '[[checkpoint]]\nname = "a"\nargs = [1,\n')
    with pytest.raises(PlanError, match=r"invalid TOML: .*\(at the end of the file, line 3\)$"):
        load_plan(path)


def test_missing_and_non_utf8_files(tmp_path):
    with pytest.raises(PlanError, match="does not exist"):
        load_plan(tmp_path / "none.toml")
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b'# caf\xe9\n')
    with pytest.raises(PlanError, match="not UTF-8"):
        load_plan(bad)
    with pytest.raises(PlanError, match="cannot be read"):
        load_plan(tmp_path)  # a directory


def test_register_plan_registers_everything_in_order(tmp_path, open_engine):
    plan = load_plan(write(tmp_path, GOOD))
    engine = open_engine()
    register_plan(engine, plan)
    assert engine.checkpoints == ["partition", "configure"]
    registered = [ev.data for ev in engine.log.query(kind="checkpoint-registered")]
    assert [d["fingerprint"] for d in registered] == [r.fingerprint for r in plan.registrations]
    assert registered[0]["description"] == "Partition the disk"
    result = engine.execute()
    assert result.status.name == "SUCCESS"
    assert engine.cache["disk"] == "/dev/sda"
    assert engine.cache["hostname"] == "box"


def test_the_same_plan_has_the_same_fingerprints_in_every_load(tmp_path):
    path = write(tmp_path, GOOD)
    first = [r.fingerprint for r in load_plan(path).registrations]
    assert first == [r.fingerprint for r in load_plan(path).registrations]


def test_register_plan_into_an_engine_that_already_has_the_names(tmp_path):
    from installengine.statemachine import RegistrationError

    plan = load_plan(write(tmp_path, GOOD))
    with InstallEngine() as engine:
        register_plan(engine, plan)
        with pytest.raises(RegistrationError, match="already registered"):
            register_plan(engine, plan)
