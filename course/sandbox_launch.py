"""Started by ``SandboxKernelManager`` in the graded notebook's folder; uses only the standard library.

``python sandbox_launch.py --box BOX --cgroups JSON -- COMMAND...`` copies the submission's files (its
notebooks left out) from the current folder into ``BOX/submission``, moves itself into new cgroups with the
limits in JSON (``{"pids.max": 64, "memory.limit_in_bytes": 4294967296}``) where this user may create
them, writes what it applied to ``BOX/run/limits.json``, and becomes COMMAND (the sandbox).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
# cgroup v1 controller folder and v2 file of each limit
LIMITS = {"pids.max": ("pids", "pids.max"), "memory.limit_in_bytes": ("memory", "memory.max")}
MAX_SUBMISSION_BYTES = 256 << 20


def copy_submission(source: Path, dest: Path) -> None:
    """The submission's files without notebooks or links, at most MAX_SUBMISSION_BYTES in all."""
    total = 0
    for path in sorted(source.rglob("*")):
        rel = path.relative_to(source)
        if path.is_symlink() or path.suffix == ".ipynb" or any(p.startswith(".") for p in rel.parts):
            continue
        if path.is_dir():
            (dest / rel).mkdir(parents=True, exist_ok=True)
        elif path.is_file():
            total += path.stat().st_size
            if total > MAX_SUBMISSION_BYTES:
                break
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dest / rel)


def _own_cgroup(controller: str) -> tuple[Path, str] | None:
    """The folder of this process's cgroup for ``controller`` and the limit-file version ("v1"/"v2")."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        number, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            folder = CGROUP_ROOT / controller / path.lstrip("/")
            if folder.is_dir():
                return folder, "v1"
    for line in lines:
        number, controllers, path = line.split(":", 2)
        if number == "0" and controllers == "":
            folder = CGROUP_ROOT / path.lstrip("/")
            if (folder / "cgroup.controllers").is_file() and controller in (
                    folder / "cgroup.controllers").read_text().split():
                return folder, "v2"
    return None


def join_cgroups(limits: dict[str, int], name: str) -> list[dict]:
    """Create a cgroup per limit under this process's own, set the limit, and move into it."""
    applied = []
    for key, value in limits.items():
        if key not in LIMITS:
            continue
        controller, v2_file = LIMITS[key]
        found = _own_cgroup(controller)
        if found is None:
            continue
        parent, version = found
        folder = parent / name
        try:
            folder.mkdir(exist_ok=True)
            (folder / (key if version == "v1" else v2_file)).write_text(str(value))
            (folder / "cgroup.procs").write_text(str(os.getpid()))
        except OSError:
            try:
                folder.rmdir()
            except OSError:
                pass
            continue
        applied.append({"limit": key, "value": value, "cgroup": str(folder)})
    return applied


def remove_cgroups(box: Path) -> None:
    """Kill what is left in the cgroups of a sandbox and remove them (after its kernel has stopped)."""
    try:
        applied = json.loads((Path(box) / "run" / "limits.json").read_text()).get("cgroups", [])
    except (OSError, ValueError):
        return
    for entry in applied:
        folder = Path(entry["cgroup"])
        for _ in range(50):
            try:
                pids = [int(p) for p in (folder / "cgroup.procs").read_text().split()]
            except OSError:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            try:
                folder.rmdir()
                break
            except OSError:
                time.sleep(0.1)


def main(argv: list[str]) -> None:
    if "--" not in argv:
        raise SystemExit("usage: sandbox_launch.py --box BOX --cgroups JSON -- COMMAND...")
    split = argv.index("--")
    options, command = argv[:split], argv[split + 1:]
    box = Path(options[options.index("--box") + 1])
    limits = json.loads(options[options.index("--cgroups") + 1])
    copy_submission(Path.cwd(), box / "submission")
    applied = join_cgroups(limits, box.name)
    (box / "run" / "limits.json").write_text(json.dumps({"cgroups": applied}))
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
