"""The checkpoints of the bundled demo install: a small system image laid into a directory.

Nothing here needs root or a real disk: "partitions" are planned, not made,
and the image is a few dozen small text files. But every checkpoint does what
a real one does: it reads what earlier checkpoints left in the data cache,
writes real files under the target's root, records what it did in the cache,
reports progress and honours a cancel request between units of work.
"""

from __future__ import annotations

import hashlib
import shutil
import uuid
from pathlib import Path
from typing import Any

from installengine.statemachine import Checkpoint, Context

#: the packages of the demo image and the files each one lays down
PACKAGES: dict[str, dict[str, Any]] = {
    "base-files": {"version": "13.1", "files": [
        "etc/issue", "etc/profile", "etc/shells", "usr/lib/os-release",
        "usr/share/base-files/motd"]},
    "shell": {"version": "5.2.15", "files": [
        "bin/sh", "etc/shrc", "usr/share/doc/shell/README"]},
    "coreutils": {"version": "9.1", "files": [
        "bin/cat", "bin/cp", "bin/ls", "bin/mkdir", "bin/mv", "bin/rm", "bin/sync",
        "usr/share/doc/coreutils/README"]},
    "kernel": {"version": "6.1.0-demo", "files": [
        "boot/vmlinuz-6.1.0-demo", "boot/initrd.img-6.1.0-demo",
        "lib/modules/6.1.0-demo/modules.dep"]},
    "init": {"version": "252", "files": [
        "sbin/init", "etc/init/default.target", "etc/init/getty.service"]},
}

#: how long each checkpoint pretends to work, in seconds; the demo install works for about 1 s
_PACE = 0.04


def _root(ctx: Context) -> Path:
    if ctx.target is None:
        raise RuntimeError(f"checkpoint {ctx.name!r} needs an install target; run the plan "
                           "with --target dir:/some/empty/dir")
    return ctx.target.root


def _work(ctx: Context, units: int) -> None:
    """Pretend to work for ``units`` paces, stopping early if cancel is requested."""
    ctx.cancel_requested.wait(_PACE * units)
    ctx.raise_if_canceled()


def _write(ctx: Context, path: Path, text: str) -> None:
    if ctx.dry_run:
        ctx.logger.info("dry run: would write %s", path)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


class DiscoverTarget(Checkpoint):
    """Look at the target and record its size and the filesystem it is on."""

    def progress_estimate(self) -> float:
        return 2

    def execute(self, ctx: Context) -> None:
        root = _root(ctx)
        ctx.progress(10, f"probing {root}")
        _work(ctx, 2)
        usage = shutil.disk_usage(root)
        ctx.cache["target"] = {"root": str(root), "total_mib": usage.total // 2**20,
                               "free_mib": usage.free // 2**20}
        ctx.progress(100, f"{usage.free // 2**20} MiB free at {root}")


class PartitionPlan(Checkpoint):
    """Plan the partition layout for the target (planned, not written: this is a demo)."""

    def __init__(self, name: str, swap_mib: int = 512) -> None:
        super().__init__(name)
        self.swap_mib = swap_mib

    def progress_estimate(self) -> float:
        return 5

    def execute(self, ctx: Context) -> None:
        target = ctx.cache["target"]
        # Stable UUIDs: planning the same target twice gives the same layout.
        def part_uuid(label: str) -> str:
            return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{target['root']}#{label}"))
        layout = [
            {"label": "esp", "mountpoint": "/boot/efi", "fs": "vfat", "size_mib": 256},
            {"label": "swap", "mountpoint": "none", "fs": "swap", "size_mib": self.swap_mib},
            {"label": "root", "mountpoint": "/", "fs": "ext4",
             "size_mib": max(1024, target["free_mib"] - 256 - self.swap_mib)},
        ]
        partitions = []
        for i, part in enumerate(layout, start=1):
            ctx.progress(100 * (i - 1) / len(layout), f"sizing {part['label']}")
            _work(ctx, 1)
            partitions.append({**part, "uuid": part_uuid(part["label"])})
        ctx.cache["partitions"] = partitions
        ctx.progress(100, f"{len(partitions)} partitions planned")


class LayDownFiles(Checkpoint):
    """Unpack the image's packages into the target root, one file at a time."""

    def __init__(self, name: str, packages: list[str]) -> None:
        super().__init__(name)
        unknown = [p for p in packages if p not in PACKAGES]
        if unknown:
            raise ValueError(f"unknown demo package(s) {unknown}; choose from "
                             f"{', '.join(PACKAGES)}")
        self.packages = packages

    def progress_estimate(self) -> float:
        return 40

    def execute(self, ctx: Context) -> None:
        root = _root(ctx)
        files = [(pkg, f) for pkg in self.packages for f in PACKAGES[pkg]["files"]]
        installed: dict[str, Any] = {}
        for done, (pkg, rel) in enumerate(files):
            ctx.progress(100 * done / len(files), f"{pkg}: {rel}")
            version = PACKAGES[pkg]["version"]
            _write(ctx, root / rel, f"# {rel} from {pkg} {version} (installengine demo image)\n")
            installed.setdefault(pkg, {"version": version, "files": []})["files"].append(rel)
            ctx.cancel_requested.wait(_PACE / 2)
            ctx.raise_if_canceled()
        ctx.cache["packages"] = installed
        ctx.progress(100, f"{len(files)} files from {len(installed)} packages")


class Configure(Checkpoint):
    """Write the system configuration: hostname, time zone, fstab, hosts."""

    def __init__(self, name: str, hostname: str, timezone: str = "UTC") -> None:
        super().__init__(name)
        self.hostname = hostname
        self.timezone = timezone

    def progress_estimate(self) -> float:
        return 8

    def execute(self, ctx: Context) -> None:
        root = _root(ctx)
        ctx.progress(0, f"hostname {self.hostname}")
        _write(ctx, root / "etc/hostname", f"{self.hostname}\n")
        _write(ctx, root / "etc/timezone", f"{self.timezone}\n")
        _write(ctx, root / "etc/hosts", f"127.0.0.1 localhost\n127.0.1.1 {self.hostname}\n")
        _work(ctx, 2)
        ctx.progress(50, "fstab")
        lines = [f"UUID={p['uuid']} {p['mountpoint']} {p['fs']} defaults 0 {i}"
                 for i, p in enumerate(ctx.cache["partitions"])]
        _write(ctx, root / "etc/fstab", "\n".join(lines) + "\n")
        _work(ctx, 2)
        ctx.cache["config"] = {"hostname": self.hostname, "timezone": self.timezone}
        ctx.progress(100, "configured")


class BootloaderConfig(Checkpoint):
    """Write a boot loader entry that boots the installed kernel from the root partition."""

    def progress_estimate(self) -> float:
        return 5

    def execute(self, ctx: Context) -> None:
        root = _root(ctx)
        packages = ctx.cache["packages"]
        if "kernel" not in packages:
            raise RuntimeError("no kernel was laid down: add 'kernel' to lay-down-files' "
                               "packages in the plan")
        kernel = packages["kernel"]["version"]
        root_uuid = next(p["uuid"] for p in ctx.cache["partitions"] if p["mountpoint"] == "/")
        ctx.progress(20, f"entry for kernel {kernel}")
        _work(ctx, 2)
        _write(ctx, root / "boot/loader/loader.conf", "default demo.conf\ntimeout 3\n")
        _write(ctx, root / "boot/loader/entries/demo.conf",
               f"title {ctx.cache['config']['hostname']}\nlinux /vmlinuz-{kernel}\n"
               f"initrd /initrd.img-{kernel}\noptions root=UUID={root_uuid} ro quiet\n")
        ctx.cache["bootloader"] = {"entry": "boot/loader/entries/demo.conf", "kernel": kernel}
        ctx.progress(100, "boot entry written")


class Finalize(Checkpoint):
    """Write a manifest of every installed file with its SHA-256, and mark the install done."""

    def progress_estimate(self) -> float:
        return 3

    def execute(self, ctx: Context) -> None:
        root = _root(ctx)
        ctx.progress(10, "hashing installed files")
        entries = []
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            rel = path.relative_to(root)
            if rel.parts[0].startswith("."):
                continue  # the engine's state directory is not part of the image
            entries.append(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {rel}")
        _work(ctx, 2)
        _write(ctx, root / "etc/installengine-manifest", "\n".join(entries) + "\n")
        ctx.cache["finalized"] = {"files": len(entries)}
        ctx.progress(100, f"manifest of {len(entries)} files")
