"""Running a target's tool: the one place subprocess errors become TargetError."""

from __future__ import annotations

import logging
import shlex
import shutil
import subprocess

from ..errors import TargetError

logger = logging.getLogger(__name__)

TOOL_HINTS = {
    "zfs": "install zfs-fuse (Debian) or zfsutils-linux, and start the zfs daemon",
    "zpool": "install zfs-fuse (Debian) or zfsutils-linux, and start the zfs daemon",
    "btrfs": "install btrfs-progs",
}


def run(command: list[str], *, timeout: float = 120.0) -> str:
    """Run ``command`` and return its stdout.

    :raises TargetError: when the tool is missing, fails, or times out; it carries
        the command line, exit code and stderr.
    """
    tool = command[0]
    if shutil.which(tool) is None:
        hint = TOOL_HINTS.get(tool, f"install {tool}")
        raise TargetError(f"{tool} is not installed (needed for: {shlex.join(command)}); {hint}",
                          command=command, returncode=127)
    logger.debug("running %s", shlex.join(command))
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              check=False)
    except subprocess.TimeoutExpired as err:
        raise TargetError(f"{shlex.join(command)} did not finish within {timeout:.0f} s",
                          command=command, returncode=None,
                          stderr=str(err.stderr or "")) from err
    except OSError as err:
        raise TargetError(f"cannot run {shlex.join(command)}: {err}", command=command) from err
    if done.returncode != 0:
        stderr = done.stderr.strip()
        first = stderr.splitlines()[0] if stderr else f"exit code {done.returncode}"
        raise TargetError(f"{shlex.join(command)} failed: {first}", command=command,
                          returncode=done.returncode, stderr=stderr)
    return done.stdout
