#!/usr/bin/env python3
"""installengine against its peers, measured side by side in one run.

The workload is the one of the shared peers script (``bench_peers.py``): 100
sequential checkpoints over ``{"payload": ~S bytes of package-record-like
entries, "counter": int, "log": [str]}``; each checkpoint increments
``counter`` and appends a 100-byte string to ``log`` through ``ctx.cache``.
Every point is durable: the target is ``state:<dir>`` (and ``dir:<root>`` with
an empty root) on the same disk as the peers' scratch files.

Each measured run is a fresh subprocess, and load/resume is measured in
another fresh subprocess on what the run left. Peers run through the peers
script's own ``--worker`` entry with the peers' Python (so their numbers come
from their code, unchanged), interleaved with installengine's runs and the
fsync floor: for every (repetition, size) the order of the systems rotates,
so machine noise falls on all of them alike.

installengine itself never pickles. The ``pickle_full`` rows are the original
engine's approach, run by the shared peers script in its own subprocess on
files it wrote itself; this script only reads that subprocess's JSON lines.

Usage::

    python bench/compare.py                       # the full run (about 10 minutes)
    python bench/compare.py --quick               # 1 repetition at 1 KB and 1 MB
    python bench/compare.py --from-raw run.txt    # the table again from a run's RAW lines
    python bench/compare.py --profile ckpt --sizes 10K,10M   # what dominates (cProfile)

Lines starting with ``RAW`` are the per-run records (JSON); the table follows.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import itertools
import json
import os
import platform
import pstats
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

PC = time.perf_counter
HERE = Path(__file__).resolve()
REPO = HERE.parent.parent
DEFAULT_PEERS_SCRIPT = REPO.parent / "shared" / "peers" / "bench_peers.py"
DEFAULT_PEERS_PYTHON = Path("/tmp/peersvenv/bin/python")
BIG = 10_000_000
#: child processes start here, so no checkout on the path shadows the installed package
NEUTRAL_CWD = tempfile.gettempdir()

IE_SYSTEMS = ("installengine_state", "installengine_dir")
#: installengine from another installation (--baseline-python), state: target, for before/after
BASELINE = "installengine_base"
#: peers run through bench_peers.py --worker; the first two need only the stdlib
STDLIB_PEERS = ("fsync_append", "pickle_full")
PEERS = (*STDLIB_PEERS, "pickle_full_x2", "langgraph_sync", "langgraph_async", "langgraph_memory",
         "langgraph_nockpt", "dbos_sqlite")
PEER_POST = {"pickle_full", "langgraph_sync", "dbos_sqlite"}
DEFAULT_SYSTEMS = ("fsync_append", *IE_SYSTEMS, "pickle_full", "langgraph_sync", "langgraph_async",
                   "dbos_sqlite")
#: systems that write every step to disk: "every peer" in the goals means these
DURABLE_PEERS = ("pickle_full", "langgraph_sync", "langgraph_async", "dbos_sqlite")
FLOOR = "fsync_append"
#: what "importing the engine" means: the package itself loads its names on first use
IMPORT_ENGINE = "from installengine.statemachine import InstallEngine"
SHORT = {"fsync_append": "fsync floor", "installengine_state": "installengine state:",
         BASELINE: "baseline state:",
         "installengine_dir": "installengine dir:", "pickle_full": "pickle_full",
         "pickle_full_x2": "pickle_full_x2", "langgraph_sync": "langgraph sync",
         "langgraph_async": "langgraph async", "langgraph_memory": "langgraph memory",
         "langgraph_nockpt": "langgraph nockpt", "dbos_sqlite": "dbos sqlite",
         "orjson": "orjson.loads(file)"}


# --------------------------------------------------------------------------- the state
# Copied from bench_peers.py so this script runs without it; the orchestrator
# checks that both build the same JSON size when the peers script is there.

def entry(i: int) -> str:
    """The ~100-byte log entry appended by checkpoint i."""
    return (f"step {i:04d} done: installed component c{i:04d} ok ").ljust(100, ".")


def make_payload(size: int) -> dict:
    """A JSON dict of package-record-like entries whose JSON text is ~size bytes."""
    def rec(i: int) -> dict:
        return {"v": f"1.{i % 97}.{i % 13}", "sum": f"{(i * 2654435761) & 0xffffffff:08x}" * 3,
                "path": f"/opt/p/pkg{i:07d}/lib"}
    per = len(json.dumps({f"pkg{0:07d}": rec(0)})) - 1
    count = max(1, size // per)
    return {f"pkg{i:07d}": rec(i) for i in range(count)}


def make_state(size: int) -> dict:
    return {"payload": make_payload(size), "counter": 0, "log": []}


def checkpoint_name(i: int) -> str:
    return f"step-{i:03d}"


# --------------------------------------------------------------------------- files, intervals

def files_bytes(d: Path) -> int:
    total = 0
    for root, _, fs in os.walk(d):
        for f in fs:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, f)).st_size
    return total


def disk_detail(d: Path) -> dict:
    """Bytes by kind of file: the log (with -wal/-shm), snapshot files, filesystem copies, other."""
    out = {"log": 0, "snapshot_files": 0, "snapshot_file_count": 0, "fs_copies": 0, "other": 0}
    for root, _, fs in os.walk(d):
        for f in fs:
            p = os.path.join(root, f)
            try:
                size = os.lstat(p).st_size
            except OSError:
                continue
            if f.startswith("log.db"):
                out["log"] += size
            elif f"{os.sep}snapshots" in root:
                out["snapshot_files"] += size
                out["snapshot_file_count"] += 1
            elif f"{os.sep}fs" in root:
                out["fs_copies"] += size
            else:
                out["other"] += size
    return out


def pct(vals: list[float], q: float) -> float:
    s = sorted(vals)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def finish(res: dict, total_s: float, work_s: float, stamps: list[float], end: float) -> dict:
    """The peers' figures: per-step = (wall of the N steps - trivial work) / N, and intervals."""
    pts = [*stamps, end]
    iv = [(b - a) * 1e3 for a, b in itertools.pairwise(pts)]
    n = res["n"]
    res.update({"total_ms": total_s * 1e3, "work_ms": work_s * 1e3,
                "per_step_ms": (total_s - work_s) * 1e3 / n,
                "median_interval_ms": statistics.median(iv), "p90_interval_ms": pct(iv, 0.9),
                "max_interval_ms": max(iv)})
    return res


def trivial_work(n: int) -> float:
    """The checkpoint bodies on a plain dict, timed alone (subtracted, as the peers do)."""
    s = make_state(1)
    t = PC()
    for i in range(n):
        s["counter"] += 1
        s["log"].append(entry(i))
    return PC() - t


# --------------------------------------------------------------------------- installengine worker

STAMPS: list[float] = []
#: (running profiler, next profiler): the first checkpoint body switches from one to the other
_SWITCH: list[cProfile.Profile] = []


def bench_checkpoint(ctx, i: int) -> None:
    """The checkpoint body of the workload (registered by reference, ``__main__:bench_checkpoint``)."""
    if _SWITCH:
        _SWITCH[0].disable()
        _SWITCH[1].enable()
        _SWITCH.clear()
    STAMPS.append(PC())
    ctx.cache["counter"] += 1
    ctx.cache["log"].append(entry(i))


def target_spec(kind: str, d: Path) -> str:
    return f"dir:{d / 'root'}" if kind == "installengine_dir" else f"state:{d / 'state'}"


def ie_register(engine, n: int) -> None:
    for i in range(n):
        engine.register(checkpoint_name(i), bench_checkpoint, args=[i])


def print_profile(title: str, prof: cProfile.Profile, top: int) -> None:
    for key in ("tottime", "cumulative"):
        buf = io.StringIO()
        stats = pstats.Stats(prof, stream=buf)
        stats.strip_dirs().sort_stats(key).print_stats(top)
        text = buf.getvalue()
        # keep the header line with the totals and the table itself
        lines = [ln for ln in text.splitlines() if ln.strip()]
        print(f"PROFILE {title} (sorted by {key})")
        for ln in lines:
            if "function calls" in ln or re.match(r"\s*(ncalls|\d)", ln):
                print("    " + ln)


def ie_run(args) -> dict:
    d, size, n = Path(args.dir), args.size, args.n
    ti = PC()
    from installengine.statemachine import InstallEngine, Status
    res = {"system": args.worker, "size": size, "n": n, "import_ms": (PC() - ti) * 1e3}
    state = make_state(size)
    res["json_bytes"] = len(json.dumps(state))
    t = PC()
    engine = InstallEngine(target_spec(args.worker, d))
    res["open_ms"] = (PC() - t) * 1e3
    t = PC()
    ie_register(engine, n)
    res["register_ms"] = (PC() - t) * 1e3
    work = trivial_work(n)
    # The application puts the initial state into the cache; not part of the N checkpoints
    # (the peers also build their input state before timing), so it is reported apart.
    if args.profile == "set":
        prof = cProfile.Profile()
        prof.enable()
    t = PC()
    for key, value in state.items():
        engine.cache[key] = value
    res["set_ms"] = (PC() - t) * 1e3
    if args.profile == "set":
        prof.disable()
        print_profile(f"cache set, S={human(size)}", prof, args.top)
    first = steady = None
    if args.profile == "ckpt":
        first, steady = cProfile.Profile(), cProfile.Profile()
        _SWITCH[:] = [first, steady]
        first.enable()
    STAMPS.clear()
    t0 = PC()
    result = engine.execute()
    end = PC()
    if steady is not None:
        steady.disable()
        first.disable()
        print_profile(f"execute() until the first checkpoint body (first point), S={human(size)}",
                      first, args.top)
        print_profile(f"execute() from the first checkpoint body to the end ({n} checkpoints), "
                      f"S={human(size)}", steady, args.top)
    if result.status is not Status.SUCCESS or engine.cache["counter"] != n:
        raise SystemExit(f"run did not succeed: {result}")
    finish(res, end - t0, work, STAMPS, end)
    res["first_point_ms"] = (STAMPS[0] - t0) * 1e3
    res["steady_per_step_ms"] = ((end - STAMPS[0]) - work) * 1e3 / n
    t = PC()
    engine.close()
    res["close_ms"] = (PC() - t) * 1e3
    res["settings"] = f"{target_spec(args.worker, Path('<scratch>'))}; log synchronous=FULL, WAL"
    res["bytes_on_disk"] = files_bytes(d)
    res["disk"] = disk_detail(d)
    return res


def ie_post(args) -> dict:
    """A new process: open, register, load the latest state, resume from the middle."""
    d, size, n = Path(args.dir), args.size, args.n
    ti = PC()
    from installengine.statemachine import InstallEngine, Status
    res = {"system": args.worker, "size": size, "phase": "post",
           "import_ms": (PC() - ti) * 1e3}
    prof = cProfile.Profile() if args.profile in ("latest", "resume", "open") else None
    t0 = PC()
    if args.profile == "open":
        prof.enable()
    engine = InstallEngine(target_spec(args.worker, d))
    res["open_ms"] = (PC() - t0) * 1e3
    t = PC()
    ie_register(engine, n)
    res["register_ms"] = (PC() - t) * 1e3
    if args.profile == "open":
        prof.disable()
        print_profile(f"new process: InstallEngine(target) + {n} registrations, S={human(size)}",
                      prof, args.top)
    res["setup_ms"] = (PC() - t0) * 1e3
    # Load latest: there is no public "state at a point" call yet, so this uses the
    # recorder the facade composes: materialize the last completed point of the lineage.
    rec = engine._recorder
    if args.profile == "latest":
        prof.enable()
    t = PC()
    point = rec.lineage.completed()[-1]
    state = rec.materialize(point)
    res["load_latest_ms"] = (PC() - t) * 1e3
    if args.profile == "latest":
        prof.disable()
        print_profile(f"new process: load latest (materialize {point.label}), S={human(size)}",
                      prof, args.top)
    if state["counter"] != n or point.checkpoint != checkpoint_name(n - 1):
        raise SystemExit(f"latest state is wrong: counter={state['counter']} at {point.label}")
    del state
    mid = n // 2
    first = rest = None
    if args.profile == "resume":
        first, rest = cProfile.Profile(), cProfile.Profile()
        _SWITCH[:] = [first, rest]
        first.enable()
    STAMPS.clear()
    t0 = PC()
    result = engine.execute(start_from=checkpoint_name(mid))
    end = PC()
    if rest is not None:
        rest.disable()
        first.disable()
        print_profile(f"new process: execute(start_from={checkpoint_name(mid)!r}) until the first "
                      f"resumed checkpoint, S={human(size)}", first, args.top)
        print_profile(f"new process: the {n - mid} resumed checkpoints, S={human(size)}", rest,
                      args.top)
    if result.status is not Status.SUCCESS or engine.cache["counter"] != n:
        raise SystemExit(f"resume did not succeed: {result}, counter={engine.cache['counter']}")
    res["resume_first_step_ms"] = (STAMPS[0] - t0) * 1e3
    res["resume_total_ms"] = (end - t0) * 1e3
    res["resume_steps"] = len(STAMPS)
    res["resume_exec_span_ms"] = (STAMPS[-1] - STAMPS[0]) * 1e3
    engine.close()
    res["bytes_after_resume"] = files_bytes(d)
    return res


def ie_memory(args) -> dict:
    """Peak memory while materializing the latest state (tracemalloc, or ru_maxrss without it)."""
    import tracemalloc

    import orjson
    from installengine.statemachine import InstallEngine
    d = Path(args.dir)
    res = {"system": args.worker, "size": args.size, "phase": "memory", "mode": args.mode}
    engine = InstallEngine(target_spec(args.worker, d))
    rec = engine._recorder
    point = rec.lineage.completed()[-1]
    if args.mode == "trace":
        tracemalloc.start()
        state = rec.materialize(point)
        current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        res.update(traced_peak_bytes=peak, traced_after_bytes=current)
        raw = orjson.dumps(state)
        res["state_json_bytes"] = len(raw)
        del state
        tracemalloc.start()
        ref = orjson.loads(raw)
        res["orjson_loads_peak_bytes"] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        del ref
    else:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        state = rec.materialize(point)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        res.update(maxrss_before_bytes=before, maxrss_after_bytes=after)
        del state
    engine.close()
    return res


def orjson_parse(args) -> dict:
    """The reference for load goals: read and parse the final state from one JSON file."""
    import orjson
    d, size, n = Path(args.dir), args.size, args.n
    state = make_state(size)
    state["counter"] = n
    state["log"] = [entry(i) for i in range(n)]
    path = d / "state.json"
    path.write_bytes(orjson.dumps(state))
    del state
    times = []
    for _ in range(7):
        t = PC()
        value = orjson.loads(path.read_bytes())
        times.append((PC() - t) * 1e3)
        del value
    return {"system": "orjson", "size": size, "phase": "post", "file_bytes": path.stat().st_size,
            "load_latest_ms": statistics.median(times), "load_min_ms": min(times)}


def worker(args) -> None:
    if args.worker == "orjson":
        res = orjson_parse(args)
    elif args.phase == "run":
        res = ie_run(args)
    elif args.phase == "post":
        res = ie_post(args)
    else:
        res = ie_memory(args)
    res.setdefault("phase", args.phase)
    sys.stdout.write("RESULT " + json.dumps(res) + "\n")
    sys.stdout.flush()
    os._exit(0)


# --------------------------------------------------------------------------- orchestrator

def parse_size(s: str) -> int:
    s = s.strip().upper().rstrip("B")
    mult = {"K": 1000, "M": 1000 * 1000}.get(s[-1:], 1)
    return int(float(s[:-1] if s[-1:] in "KM" else s) * mult)


def human(n: float) -> str:
    for unit, div in (("MB", 1e6), ("KB", 1e3)):
        if n >= div:
            return f"{n / div:.3g}{unit}"
    return f"{int(n)}B"


class Runner:
    """Starts workers: installengine's (this script) and the peers' (their script, their Python)."""

    def __init__(self, args) -> None:
        self.args = args
        self.peers_script = Path(args.peers_script) if args.peers_script else None
        self.peers_python = args.peers_python

    def ie(self, system: str, phase: str, d: Path, size: int, *extra: str) -> dict:
        python = self.args.baseline_python if system == BASELINE else sys.executable
        cmd = [python, str(HERE), "--worker", system, "--phase", phase, "--dir", str(d),
               "--size", str(size), "--n", str(self.args.n), *extra]
        return self._call(cmd, f"{system}/{phase}")

    def peer(self, system: str, phase: str, d: Path, size: int) -> dict:
        assert self.peers_script is not None
        python = self.peers_python or sys.executable  # the stdlib peers run with either
        cmd = [str(python), str(self.peers_script), "--worker", system,
               "--phase", phase, "--dir", str(d), "--size", str(size), "--n", str(self.args.n)]
        return self._call(cmd, f"{system}/{phase}")

    def _call(self, cmd: list[str], what: str) -> dict:
        t0 = PC()
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=self.args.timeout,
                           cwd=NEUTRAL_CWD, check=False)
        wall = PC() - t0
        for line in p.stdout.splitlines():
            if line.startswith("RESULT "):
                r = json.loads(line[7:])
                r["process_wall_ms"] = wall * 1e3
                return r
        raise RuntimeError(f"{what} failed rc={p.returncode}\n{p.stdout[-3000:]}\n"
                           f"{p.stderr[-3000:]}")


def installed_fingerprint(python: str = sys.executable) -> tuple[str, str]:
    """(version, hash of the installed package's .py files): a reinstall mid-run shows up."""
    code = ("import importlib.metadata as m, pathlib, hashlib, installengine.statemachine as s;"
            "root = pathlib.Path(s.__file__).parent.parent; h = hashlib.sha256();"
            "[h.update(p.read_bytes()) for p in sorted(root.rglob('*.py'))];"
            "print(m.version('installengine'), h.hexdigest()[:16])")
    out = subprocess.run([python, "-c", code], capture_output=True, text=True,
                         check=False, cwd=NEUTRAL_CWD)
    parts = out.stdout.split()
    return (parts[0], parts[1]) if len(parts) == 2 else ("?", out.stderr.strip()[-200:])


def env_info(base: Path, runner: Runner) -> dict:
    import sqlite3

    import orjson
    version, code_hash = installed_fingerprint()
    info = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "python": sys.version.split()[0],
            "sqlite": sqlite3.sqlite_version, "orjson": orjson.__version__,
            "platform": platform.platform(), "nproc": os.cpu_count(),
            "installengine": version, "installed_code_sha256": code_hash}
    try:
        with open("/proc/meminfo") as f:
            info["memory"] = f.readline().split(":", 1)[1].strip()
    except OSError:
        pass
    git = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True, check=False)
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, check=False)
    info["git_head"] = git.stdout.strip()
    info["git_modified_files"] = len(dirty.stdout.splitlines())
    dev = os.stat(base).st_dev
    best = ""
    try:
        with open("/proc/mounts") as f:
            for line in f:
                parts = line.split()
                try:
                    if os.stat(parts[1]).st_dev == dev and len(parts[1]) >= len(best):
                        best = parts[1]
                        info["filesystem"] = f"{parts[0]} on {parts[1]} type {parts[2]} ({parts[3]})"
                except OSError:
                    pass
    except OSError:
        pass
    if runner.args.baseline_python:
        info["baseline"] = " ".join((runner.args.baseline_python,
                                     *installed_fingerprint(runner.args.baseline_python)))
    if runner.peers_python:
        code = ("import importlib.metadata as m, sys, sqlite3; print(sys.version.split()[0], "
                "sqlite3.sqlite_version, *[m.version(p) for p in ('langgraph', "
                "'langgraph-checkpoint', 'langgraph-checkpoint-sqlite', 'dbos', 'SQLAlchemy')])")
        out = subprocess.run([runner.peers_python, "-c", code], capture_output=True, text=True,
                             check=False)
        info["peers"] = out.stdout.strip() or out.stderr.strip()[-200:]
    return info


def command_times(reps: int) -> dict:
    """Import time of the engine and ``installengine --help``, each minus a bare interpreter."""
    def wall(cmd: list[str]) -> tuple[float, subprocess.CompletedProcess]:
        t = PC()
        p = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=NEUTRAL_CWD)
        return (PC() - t) * 1e3, p

    exe = sys.executable
    cli = Path(exe).parent / "installengine"
    bare, imp, helps = [], [], []
    help_ok, help_note = False, ""
    if cli.exists():
        _, p = wall([str(cli), "--help"])
        help_ok = p.returncode == 0 and "usage" in p.stdout.lower()
        help_note = "" if help_ok else (p.stderr.strip() or p.stdout.strip()).splitlines()[-1][:120]
    else:
        help_note = f"no {cli.name} command next to {exe}"
    for _ in range(reps):  # interleaved, so drift hits all three
        bare.append(wall([exe, "-c", "pass"])[0])
        imp.append(wall([exe, "-c", IMPORT_ENGINE])[0])
        if help_ok:
            helps.append(wall([str(cli), "--help"])[0])
    res = {"system": "commands", "phase": "commands", "bare_python_ms": statistics.median(bare),
           "import_process_ms": statistics.median(imp),
           "import_ms": statistics.median(imp) - statistics.median(bare),
           "help_ok": help_ok, "help_note": help_note}
    if helps:
        res["help_ms"] = statistics.median(helps)
    return res


def plan_runs(sizes: list[int], reps: int, big_reps: int) -> list[tuple[int, int]]:
    plan = [(rep, s) for rep in range(reps) for s in sizes if s < BIG]
    plan += [(rep, s) for rep in range(big_reps) for s in sizes if s >= BIG]
    return plan


def orchestrate(args) -> list[dict]:
    runner = Runner(args)
    systems = [s for s in args.systems.split(",") if s]
    have_peers_script = runner.peers_script is not None and runner.peers_script.exists()
    if not have_peers_script:
        runner.peers_script = None
    dropped = []
    for s in list(systems):
        if s in PEERS and (not have_peers_script
                           or (s not in STDLIB_PEERS and not runner.peers_python)):
            systems.remove(s)
            dropped.append(s)
    if FLOOR not in systems:
        systems.insert(0, FLOOR)
    if args.baseline_python and BASELINE not in systems:
        systems.insert(systems.index(FLOOR) + 1, BASELINE)
    sizes = [parse_size(s) for s in args.sizes.split(",") if s]
    base = Path(tempfile.mkdtemp(prefix="iecompare-", dir=args.base or "/tmp"))
    records: list[dict] = []

    def emit(r: dict) -> None:
        records.append(r)
        print("RAW " + json.dumps(r), flush=True)

    t_start = PC()
    info = env_info(base, runner)
    info["argv"] = sys.argv[1:]
    info["systems"] = systems
    info["scratch"] = str(base)
    emit({"system": "env", "phase": "env", **info})
    if dropped:
        print(f"# not run (peers script or peers Python missing): {', '.join(dropped)}", flush=True)
    if have_peers_script:
        # the copy of make_payload here must build what the peers script builds
        code = (f"import sys, json; sys.path.insert(0, {str(runner.peers_script.parent)!r}); "
                "import bench_peers as b; print(len(json.dumps(b.make_state(123456))))")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=False)
        if out.stdout.strip() != str(len(json.dumps(make_state(123456)))):
            raise SystemExit("bench_peers.make_state differs from this script's copy: update it")
    plan = plan_runs(sizes, args.reps, args.big_reps)
    for k, (rep, size) in enumerate(plan):
        order = systems[k % len(systems):] + systems[:k % len(systems)]
        if size >= BIG:
            order = [s for s in order if s != "pickle_full_x2"]
        for system in order:
            d = Path(tempfile.mkdtemp(prefix=f"{system}-", dir=base))
            try:
                if system in (*IE_SYSTEMS, BASELINE):
                    r = runner.ie(system, "run", d, size)
                    r["rep"] = rep
                    emit(r)
                    if rep == 0 and system == "installengine_state":
                        for mode in ("rss", "trace"):
                            m = runner.ie(system, "memory", d, size, "--mode", mode)
                            m["rep"] = rep
                            emit(m)
                    p = runner.ie(system, "post", d, size)
                    p["rep"] = rep
                    emit(p)
                else:
                    r = runner.peer(system, "run", d, size)
                    r["rep"] = rep
                    r.pop("files", None)
                    emit(r)
                    if system in PEER_POST:
                        p = runner.peer(system, "post", d, size)
                        p["rep"] = rep
                        emit(p)
            except Exception as e:  # report it and keep going, as the peers script does
                print(f"ERROR {system} size={size} rep={rep}: {e}", flush=True)
            finally:
                shutil.rmtree(d, ignore_errors=True)
        print(f"# rep {rep} size {human(size)} done at {PC() - t_start:.0f}s", flush=True)
    for size in sizes:
        d = Path(tempfile.mkdtemp(prefix="orjson-", dir=base))
        try:
            emit(runner.ie("orjson", "post", d, size))
        finally:
            shutil.rmtree(d, ignore_errors=True)
    emit(command_times(args.command_reps))
    _, code_hash = installed_fingerprint()
    if code_hash != info["installed_code_sha256"]:
        print(f"WARNING: installengine was reinstalled during the run ({info['installed_code_sha256']}"
              f" -> {code_hash}); rerun for clean numbers", flush=True)
    emit({"system": "wall", "phase": "wall", "seconds": PC() - t_start})
    if not args.keep:
        shutil.rmtree(base, ignore_errors=True)
    return records


# --------------------------------------------------------------------------- the table

def med(vals: list[float]) -> float:
    return statistics.median(vals) if vals else float("nan")


def summarize(records: list[dict]) -> str:
    env = next((r for r in records if r.get("phase") == "env"), {})
    runs = [r for r in records if r.get("phase") == "run"]
    posts = [r for r in records if r.get("phase") == "post"]
    mems = [r for r in records if r.get("phase") == "memory"]
    cmds = next((r for r in records if r.get("phase") == "commands"), {})
    wall = next((r for r in records if r.get("phase") == "wall"), {})
    systems = [s for s in dict.fromkeys((FLOOR, *IE_SYSTEMS, BASELINE, *PEERS))
               if any(r["system"] == s for r in runs)]
    sizes = sorted({r["size"] for r in runs} | {r["size"] for r in posts if "size" in r})

    def sel(lst: list[dict], system: str, size: int, key: str) -> list[float]:
        return [r[key] for r in lst if r["system"] == system and r.get("size") == size and key in r]

    def paired(system: str, size: int, ref: str, key: str = "per_step_ms") -> float:
        """Median over repetitions of system/ref, both from the same repetition."""
        by_rep = {r["rep"]: r[key] for r in runs if r["system"] == ref and r["size"] == size}
        vals = [r[key] / by_rep[r["rep"]] for r in runs
                if r["system"] == system and r["size"] == size and r.get("rep") in by_rep]
        return med(vals)

    def f(v: float, fmt: str) -> str:
        width = int(fmt.split(".")[0].rstrip(",") or 0)
        return format("-", f">{width}") if v != v else format(v, fmt)  # NaN -> "-"

    ie = "installengine_state"
    lines = []
    hdr = (f"{'size':>6} {'system':20} {'n':>2} {'ms/ckpt':>8} {'min':>7} {'max':>7} "
           f"{'steady':>7} {'x fsync':>7} {'stdy x':>6} {'peer/ie':>7} {'disk MB':>8} | "
           f"{'import':>6} {'setup':>7} {'latest':>8} {'resume1st':>9} {'resume50':>9} "
           f"{'disk MB':>8}")
    lines.append(hdr)
    lines.append("-" * len(hdr))
    for size in sizes:
        for system in systems:
            ps = sel(runs, system, size, "per_step_ms")
            if not ps:
                continue
            steady = sel(runs, system, size, "median_interval_ms")
            floor_steady = med(sel(runs, FLOOR, size, "median_interval_ms"))
            row = (f"{human(size):>6} {SHORT.get(system, system):20} {len(ps):>2} "
                   f"{med(ps):8.3f} {min(ps):7.3f} {max(ps):7.3f} {f(med(steady), '7.3f')} "
                   f"{f(paired(system, size, FLOOR), '7.1f')} "
                   f"{f(med(steady) / floor_steady, '6.1f')} "
                   f"{f(paired(system, size, ie) if system != FLOOR else float('nan'), '7.2f')} "
                   f"{f(med(sel(runs, system, size, 'bytes_on_disk')) / 1e6, '8.2f')} | ")
            if sel(posts, system, size, "load_latest_ms"):
                row += (f"{f(med(sel(posts, system, size, 'import_ms')), '6.0f')} "
                        f"{f(med(sel(posts, system, size, 'setup_ms')), '7.1f')} "
                        f"{f(med(sel(posts, system, size, 'load_latest_ms')), '8.2f')} "
                        f"{f(med(sel(posts, system, size, 'resume_first_step_ms')), '9.2f')} "
                        f"{f(med(sel(posts, system, size, 'resume_total_ms')), '9.2f')} "
                        f"{f(med(sel(posts, system, size, 'bytes_after_resume')) / 1e6, '8.2f')}")
            lines.append(row.rstrip(" |"))
        parse = sel(posts, "orjson", size, "load_latest_ms")
        if parse:
            fb = med(sel(posts, "orjson", size, "file_bytes"))
            lines.append(f"{human(size):>6} {SHORT['orjson']:20} {'':>2} {'':>8} {'':>7} {'':>7} "
                         f"{'':>7} {'':>7} {'':>6} {'':>7} {fb / 1e6:8.2f} | {'':>6} {'':>7} "
                         f"{med(parse):8.2f}")
    legend_at = len(lines) + 1
    lines.append("")
    lines.append("ms/ckpt: (wall of execute()/invoke() over the N checkpoints - the trivial "
                 "checkpoint work timed alone) / N, the peers' definition; median, min, max over "
                 "repetitions.")
    lines.append("steady: median interval between consecutive checkpoint starts (leaves out the "
                 "first point, which records the initial state). x fsync / stdy x: the same over "
                 "the fsync floor (paired by repetition for ms/ckpt). peer/ie: this system's "
                 "ms/ckpt over installengine state:'s, paired by repetition (>1: installengine "
                 "is ahead). disk MB: all files after the run.")
    lines.append("New process (right of |): import of the package, setup (installengine: "
                 "InstallEngine(target) + 100 registrations; langgraph: graph build + compile; "
                 "dbos: launch), latest (installengine: materialize the last completed point "
                 "through engine._recorder; langgraph: get_state; dbos: list_workflow_steps; "
                 "pickle: unpickle the last file), resume1st (until the first resumed checkpoint "
                 "body runs; installengine: execute(start_from='step-050')), resume50 (until the "
                 "50 resumed checkpoints are done), disk MB after the resume.")
    lines[legend_at:] = [w for ln in lines[legend_at:] for w in textwrap.wrap(ln, 100)]
    # ---- extra figures
    lines.append("")
    for size in sizes:
        set_ms = sel(runs, ie, size, "set_ms")
        first = sel(runs, ie, size, "first_point_ms")
        reg = sel(runs, ie, size, "register_ms")
        if set_ms:
            disk = next((r["disk"] for r in runs if r["system"] == ie and r["size"] == size), {})
            lines.append(f"installengine state: S={human(size):>6}: initial cache set "
                         f"{med(set_ms):8.1f} ms, first point {med(first):7.1f} ms, "
                         f"100 registrations {med(reg):6.1f} ms; disk: log "
                         f"{disk.get('log', 0) / 1e6:.2f} MB, {disk.get('snapshot_file_count', 0)} "
                         f"snapshot file(s) {disk.get('snapshot_files', 0) / 1e6:.2f} MB")
    for r in mems:
        if r["mode"] == "trace":
            lines.append(f"memory, materializing the S={human(r['size'])} state: tracemalloc peak "
                         f"{r['traced_peak_bytes'] / 1e6:.1f} MB (orjson.loads of the same "
                         f"{r['state_json_bytes'] / 1e6:.1f} MB of JSON: "
                         f"{r['orjson_loads_peak_bytes'] / 1e6:.1f} MB)")
        else:
            lines.append(f"memory, materializing the S={human(r['size'])} state: ru_maxrss "
                         f"{r['maxrss_before_bytes'] / 1e6:.1f} MB after opening -> "
                         f"{r['maxrss_after_bytes'] / 1e6:.1f} MB")
    if cmds:
        lines.append(f"{IMPORT_ENGINE}: {cmds['import_ms']:.1f} ms "
                     f"(python -c '{IMPORT_ENGINE}' {cmds['import_process_ms']:.1f} ms minus "
                     f"python -c pass {cmds['bare_python_ms']:.1f} ms)")
        if cmds.get("help_ok"):
            lines.append(f"installengine --help: {cmds['help_ms']:.1f} ms wall")
        else:
            lines.append(f"installengine --help: not measured ({cmds.get('help_note')})")
    lines.extend(w for ln in goals(runs, posts, cmds, sizes, sel, paired)
                 for w in (textwrap.wrap(ln, 100, subsequent_indent="  ") or [""]))
    if wall:
        lines.append(f"\nwall time of the run: {wall['seconds']:.0f} s")
    if env:
        keys = ("date", "nproc", "memory", "filesystem", "python", "sqlite", "orjson",
                "installengine", "git_head", "git_modified_files", "installed_code_sha256",
                "baseline", "peers")
        lines.append("ENV " + json.dumps({k: env[k] for k in keys if k in env}))
    return "\n".join(lines)


def goals(runs, posts, cmds, sizes, sel, paired) -> list[str]:
    ie = "installengine_state"
    out = ["", "GOALS (ratios from this run)"]

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT MET"

    big = [s for s in sizes if s <= BIG and sel(runs, ie, s, "per_step_ms")]
    if big:
        r = {s: paired(ie, s, FLOOR) for s in big}
        st = {s: med(sel(runs, ie, s, "median_interval_ms")) / med(sel(runs, FLOOR, s,
                                                                        "median_interval_ms"))
              for s in big}
        out.append(f"- per-checkpoint <= 5x the fsync floor at every size: "
                   f"{verdict(all(v <= 5 for v in r.values()))}: ms/ckpt "
                   + ", ".join(f"{human(s)} {v:.1f}x" for s, v in r.items())
                   + "; steady " + ", ".join(f"{human(s)} {v:.1f}x" for s, v in st.items()))
        lo, hi = min(big), max(big)
        flat = med(sel(runs, ie, hi, "per_step_ms")) / med(sel(runs, ie, lo, "per_step_ms"))
        flat_st = (med(sel(runs, ie, hi, "median_interval_ms"))
                   / med(sel(runs, ie, lo, "median_interval_ms")))
        out.append(f"- flat in cache size (ms/ckpt at {human(hi)} over {human(lo)}): "
                   f"{verdict(flat <= 1.5)}: {flat:.2f}x (steady {flat_st:.2f}x)")
        behind = []
        for s in big:
            for p in DURABLE_PEERS:
                v = paired(p, s, ie)
                if v == v and v <= 1:
                    behind.append(f"{p} at {human(s)} ({v:.2f})")
        ran = [p for p in DURABLE_PEERS if any(r["system"] == p for r in runs)]
        out.append(f"- ahead of every peer at every size ({', '.join(ran) or 'no peers ran'}): "
                   f"{verdict(bool(ran) and not behind)}"
                   + (f": behind {', '.join(behind)}" if behind else ""))
    if BIG in sizes and sel(runs, "langgraph_sync", BIG, "per_step_ms"):
        v = paired("langgraph_sync", BIG, ie)
        va = paired("langgraph_async", BIG, ie)
        out.append(f"- >= 30x ahead of LangGraph at 10 MB: {verdict(v >= 30)}: sync {v:.1f}x, "
                   f"async {va:.1f}x")
    if BIG in sizes and sel(runs, ie, BIG, "bytes_on_disk"):
        b = med(sel(runs, ie, BIG, "bytes_on_disk"))
        out.append(f"- disk after 100 checkpoints at 10 MB <= 40 MB: {verdict(b <= 40e6)}: "
                   f"{b / 1e6:.1f} MB")
    if BIG in sizes and sel(posts, ie, BIG, "load_latest_ms") and sel(posts, "orjson", BIG,
                                                                         "load_latest_ms"):
        parse = med(sel(posts, "orjson", BIG, "load_latest_ms"))
        lat = med(sel(posts, ie, BIG, "load_latest_ms"))
        first = med(sel(posts, ie, BIG, "resume_first_step_ms"))
        total = med(sel(posts, ie, BIG, "resume_total_ms"))
        lg = {k: med(sel(posts, "langgraph_sync", BIG, k))
              for k in ("load_latest_ms", "resume_first_step_ms", "resume_total_ms")}
        out.append(f"- load latest at 10 MB <= 2x orjson parse ({2 * parse:.0f} ms) and below "
                   f"LangGraph ({f_ms(lg['load_latest_ms'])}): "
                   f"{verdict(lat <= 2 * parse and not lat >= lg['load_latest_ms'])}: {lat:.0f} ms"
                   f" = {lat / parse:.1f}x the parse")
        out.append(f"- resume from 50 at 10 MB <= 2x orjson parse and below LangGraph: first "
                   f"resumed checkpoint after {first:.0f} ms = {first / parse:.1f}x the parse "
                   f"(LangGraph {f_ms(lg['resume_first_step_ms'])}): "
                   f"{verdict(first <= 2 * parse and not first >= lg['resume_first_step_ms'])}; "
                   f"all 50 done after {total:.0f} ms (LangGraph {f_ms(lg['resume_total_ms'])})")
    if cmds:
        if cmds.get("help_ok"):
            out.append(f"- installengine --help <= 150 ms: {verdict(cmds['help_ms'] <= 150)}: "
                       f"{cmds['help_ms']:.0f} ms")
        else:
            out.append("- installengine --help <= 150 ms: not measured (no command line yet)")
        out.append(f"- import of the engine <= 100 ms: {verdict(cmds['import_ms'] <= 100)}: "
                   f"{cmds['import_ms']:.0f} ms")
    return out


def f_ms(v: float) -> str:
    return "not run" if v != v else f"{v:.0f} ms"


# --------------------------------------------------------------------------- profiles

def import_profile(top: int) -> None:
    """``python -X importtime``: self time summed by top-level package, and the slowest modules."""
    p = subprocess.run([sys.executable, "-X", "importtime", "-c", IMPORT_ENGINE],
                       capture_output=True, text=True, check=False, cwd=NEUTRAL_CWD)
    by_pkg: dict[str, int] = {}
    mods: list[tuple[int, int, str]] = []
    for line in p.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if not m:
            continue
        self_us, cum_us, name = int(m.group(1)), int(m.group(2)), m.group(4)
        by_pkg[name.split(".")[0]] = by_pkg.get(name.split(".")[0], 0) + self_us
        mods.append((self_us, cum_us, name))
    total = sum(by_pkg.values())
    print(f"PROFILE {IMPORT_ENGINE} (-X importtime), self time {total / 1e3:.1f} ms"
          " in all, by top-level package:")
    for name, us in sorted(by_pkg.items(), key=lambda kv: -kv[1])[:top]:
        print(f"    {us / 1e3:8.1f} ms  {name}")
    print("  slowest modules by self time (cumulative in brackets):")
    for self_us, cum_us, name in sorted(mods, reverse=True)[:top]:
        print(f"    {self_us / 1e3:8.1f} ms  ({cum_us / 1e3:7.1f} ms)  {name}")


def profile(args) -> None:
    """Run installengine's workers under cProfile and print what dominates each figure."""
    runner = Runner(args)
    sizes = [parse_size(s) for s in args.sizes.split(",") if s]
    what = args.profile.split(",")
    if "import" in what:
        import_profile(args.top)
    base = Path(tempfile.mkdtemp(prefix="ieprofile-", dir=args.base or "/tmp"))
    try:
        for size in sizes:
            if not {"ckpt", "set", "latest", "resume", "open"} & set(what):
                break
            d = base / f"s{size}"
            d.mkdir()
            for w in ("set", "ckpt"):
                if w in what:
                    shutil.rmtree(d)
                    d.mkdir()
                    out = subprocess.run(
                        [sys.executable, str(HERE), "--worker", "installengine_state", "--phase",
                         "run", "--dir", str(d), "--size", str(size), "--n", str(args.n),
                         "--profile", w, "--top", str(args.top)],
                        capture_output=True, text=True, check=False, cwd=NEUTRAL_CWD)
                    print("\n".join(ln for ln in out.stdout.splitlines()
                                    if not ln.startswith("RESULT")) or out.stderr[-2000:])
            if not (d / "state").exists():
                runner.ie("installengine_state", "run", d, size)
            for w in ("open", "latest", "resume"):
                if w not in what:
                    continue
                scratch = base / f"s{size}-{w}"
                shutil.copytree(d, scratch)  # every profile starts from the same log
                out = subprocess.run(
                    [sys.executable, str(HERE), "--worker", "installengine_state", "--phase",
                     "post", "--dir", str(scratch), "--size", str(size), "--n", str(args.n),
                     "--profile", w, "--top", str(args.top)],
                    capture_output=True, text=True, check=False, cwd=NEUTRAL_CWD)
                print("\n".join(ln for ln in out.stdout.splitlines()
                                if not ln.startswith("RESULT")) or out.stderr[-2000:])
    finally:
        shutil.rmtree(base, ignore_errors=True)


# --------------------------------------------------------------------------- main

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="one repetition at 1K and 1M, no 10 MB (a smoke run, not for quoting)")
    ap.add_argument("--sizes", default="1K,100K,1M,10M",
                    help="persistent cache sizes (K=1000, M=1000000); default %(default)s")
    ap.add_argument("--reps", type=int, default=5, help="repetitions below 10 MB (default 5)")
    ap.add_argument("--big-reps", type=int, default=3,
                    help="repetitions at 10 MB and above (default 3; the peers' default is 2)")
    ap.add_argument("--n", type=int, default=100, help="checkpoints per run (default 100)")
    ap.add_argument("--systems", default=",".join(DEFAULT_SYSTEMS),
                    help="systems to run; the fsync floor always runs. Also available: "
                         "pickle_full_x2, langgraph_memory, langgraph_nockpt. "
                         "Default: %(default)s")
    ap.add_argument("--peers-python", default=str(DEFAULT_PEERS_PYTHON)
                    if DEFAULT_PEERS_PYTHON.exists() else None,
                    help="Python of the peers' venv (default /tmp/peersvenv/bin/python if it "
                         "exists); without it only the stdlib peers run")
    ap.add_argument("--peers-script", default=str(DEFAULT_PEERS_SCRIPT),
                    help="the shared peers script (default %(default)s)")
    ap.add_argument("--baseline-python", metavar="PYTHON",
                    help="also run installengine (state: target) from the installation of this "
                         "Python, as 'baseline state:': before/after a change in one run")
    ap.add_argument("--base", help="scratch directory (default: a new one under /tmp); put it "
                                   "on the disk you want to measure")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    ap.add_argument("--timeout", type=int, default=600, help="seconds per worker process")
    ap.add_argument("--command-reps", type=int, default=15,
                    help="repetitions of the import and --help timings (default 15)")
    ap.add_argument("--from-raw", metavar="FILE",
                    help="print the table from the RAW lines of an earlier run, run nothing")
    ap.add_argument("--profile", metavar="WHAT",
                    help="profile instead of comparing: comma-separated of ckpt, set, open, "
                         "latest, resume, import (at each of --sizes)")
    ap.add_argument("--top", type=int, default=25, help="rows per profile (default 25)")
    # worker mode (internal)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--phase", default="run", help=argparse.SUPPRESS)
    ap.add_argument("--dir", help=argparse.SUPPRESS)
    ap.add_argument("--size", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--mode", default="rss", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    if args.from_raw:
        text = Path(args.from_raw).read_text()
        records = [json.loads(ln[4:]) for ln in text.splitlines() if ln.startswith("RAW ")]
        print(summarize(records))
        return
    if args.profile:
        profile(args)
        return
    if args.quick:
        args.sizes, args.reps, args.big_reps, args.command_reps = "1K,1M", 1, 0, 5
    records = orchestrate(args)
    print()
    print(summarize(records))


if __name__ == "__main__":
    main()
