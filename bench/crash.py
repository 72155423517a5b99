#!/usr/bin/env python3
"""Crash bench: SIGKILL the engine at random moments, a thousand times, and count what went wrong.

Each trial runs the twenty-checkpoint crash plan of ``tests/faults/steps.py``
in a child on a new ``dir:`` target, SIGKILLs it at a random moment (one to
three children per trial, later ones resuming), and checks the aftermath from
a new engine; see ``tests/faults/harness.py``. The figures that must hold:
unsafe offers 0, lost completions 0, every run ending equal to an
uninterrupted one.

Usage::

    python bench/crash.py                      # 1,000 trials on 2 processes
    python bench/crash.py --quick              # 50 trials
    python bench/crash.py --trials 200 --seed 7 --processes 1 --workdir /var/tmp
    python bench/crash.py --target zfs:pool    # on datasets under a zfs pool

``--workdir`` picks the filesystem the targets live on (default: the system
temp directory). The exit status is 1 when any of the figures above fails.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.faults.harness import (  # noqa: E402  (the repository root goes on the path first)
    Stats,
    build_reference,
    destroy_zfs,
    dir_spec,
    run_trials,
    zfs_spec_for,
)


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=1000, help="trials to run (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first trial (default 0)")
    parser.add_argument("--quick", action="store_true", help="50 trials")
    parser.add_argument("--processes", type=int, default=2,
                        help="split the trials across this many processes (default 2)")
    parser.add_argument("--jobs", type=int, default=1, help="trial threads per process (default 1)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where the targets go (default: the system temp directory)")
    parser.add_argument("--target", default="dir",
                        help="'dir' (default) or 'zfs:<pool>' for datasets under a pool")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    return parser.parse_args()


def _one_process(args: argparse.Namespace, trials: int) -> Stats:
    workdir = Path(tempfile.mkdtemp(prefix="installengine-crash-", dir=args.workdir))
    ref = build_reference(workdir / "reference")
    if args.target == "dir":
        make_spec, cleanup = dir_spec, None
    elif args.target.startswith("zfs:"):
        make_spec, cleanup = zfs_spec_for(args.target.removeprefix("zfs:")), destroy_zfs
    else:
        raise SystemExit(f"--target {args.target!r}: use 'dir' or 'zfs:<pool>'")

    def note(stats: Stats) -> None:
        if stats.trials % 50 == 0:
            print(f"  {stats.trials} trials, {stats.kills} kills, {len(stats.problems)} problems",
                  file=sys.stderr, flush=True)

    stats = run_trials(workdir, ref, make_spec=make_spec, first_seed=args.seed, trials=trials,
                       jobs=args.jobs, cleanup=cleanup, on_trial=note)
    if not stats.problems:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"kept {workdir} for a post-mortem", file=sys.stderr)
    return stats


def _split(args: argparse.Namespace, trials: int) -> Stats:
    """Run ``--processes`` copies of this script on consecutive seed ranges and add them up."""
    per = [trials // args.processes + (1 if i < trials % args.processes else 0)
           for i in range(args.processes)]
    procs = []
    seed = args.seed
    for count in per:
        if count == 0:
            continue
        command = [sys.executable, __file__, "--trials", str(count), "--seed", str(seed),
                   "--processes", "1", "--jobs", str(args.jobs), "--target", args.target, "--json"]
        if args.workdir is not None:
            command += ["--workdir", str(args.workdir)]
        procs.append(subprocess.Popen(command, stdout=subprocess.PIPE, text=True))
        seed += count
    total = Stats()
    for proc in procs:
        out, _ = proc.communicate()
        total.merge(Stats.from_json(json.loads(out.strip().splitlines()[-1])))
    return total


def main() -> int:
    args = _parse()
    trials = 50 if args.quick else args.trials
    began = time.monotonic()
    stats = _split(args, trials) if args.processes > 1 else _one_process(args, trials)
    elapsed = time.monotonic() - began
    if args.json:
        print(json.dumps(stats.as_json()))
        return 0
    moments = ", ".join(f"{k} {v}" for k, v in stats.moments.most_common())
    print(f"trials: {stats.trials}")
    print(f"kills: {stats.kills}")
    print(f"resumable offers checked: {stats.offers_checked}")
    print(f"resumes from offers checked: {stats.resumes_checked}")
    print(f"unsafe offers: {len(stats.unsafe)} (must be 0)")
    print(f"lost completions: {len(stats.lost)} (must be 0)")
    print(f"runs ending equal: {stats.runs_equal} of {stats.trials} (must be all)")
    print(f"other problems: {len(stats.other)}")
    print(f"kill moments: {moments}")
    print(f"elapsed: {elapsed:.0f} s")
    for problem in stats.problems[:20]:
        print(f"  {problem}")
    return 1 if stats.problems or stats.runs_equal != stats.trials else 0


if __name__ == "__main__":
    sys.exit(main())
