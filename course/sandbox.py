"""Each graded kernel runs in a sandbox: bubblewrap (``bwrap``, Debian package ``bubblewrap``).

``SandboxKernelManager`` is the kernel manager of ``nbgrader autograde`` (``course/nbgrader_config.py``).
It starts ``python -m lmlab.kernelguard`` (the guarded kernel) inside ``bwrap``, which shows it only

- the Python environment, read-only (``sys.prefix``, ``sys.base_prefix``, the ``lmlab`` package),
  and ``/usr`` with the few files of ``/etc`` that programs need;
- the submission's own files (its notebooks left out: the grader's copies hold the hidden tests),
  read-only in ``/sandbox/submission`` and copied into the working folder ``/sandbox/work``, a tmpfs of
  ``work_bytes``; ``/tmp`` is another; nothing else is writable but the folder of the kernel's sockets;
- no network (``--unshare-all``; the kernel talks to the grader over Unix sockets), no other process
  (its own PID namespace), no capabilities.

Limits: memory (``RLIMIT_DATA`` per process and, where this user may create cgroups, a memory cgroup over
all of them), processes (a pids cgroup, or ``RLIMIT_NPROC`` when not root), file size, open files.
Without ``bwrap`` grading refuses to start unless the instructor sets ``unsafe`` (``python -m course
autograde --unsafe``); the kernel then still runs guarded, limited and in a scratch copy, but it can read
and write what the instructor can.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from jupyter_client.manager import AsyncKernelManager
from traitlets import Bool, Integer, Unicode, default

LAUNCHER = Path(__file__).with_name("sandbox_launch.py")
UNSAFE_VARIABLE = "LMLAB_GRADING_UNSAFE"
BOX_VARIABLE = "LMLAB_SANDBOX_DIR"  # where the per-kernel folders go (default: the system's temp folder)
GiB, MiB = 1 << 30, 1 << 20
# variables the kernel keeps from the grader's environment (bwrap --clearenv drops all others)
KEPT_VARIABLES = ("LANG", "LC_ALL", "NBGRADER_EXECUTION", "LMLAB_COURSE_VARIANT", "MPLBACKEND", "OMP_NUM_THREADS",
                  "PYDEVD_DISABLE_FILE_VALIDATION", "PYTHONHASHSEED", "TZ")
ETC_FILES = ("ld.so.cache", "ld.so.conf", "localtime", "passwd", "group", "nsswitch.conf", "alternatives",
             "mime.types", "fonts", "ssl/certs")


class SandboxUnavailable(RuntimeError):
    """No working isolation tool, and the instructor did not choose to grade unsafely."""


@functools.cache
def probe_bwrap(path: str | None = None) -> str | None:
    """Why ``bwrap`` cannot sandbox here (None when it can): missing, or refused by the kernel."""
    path = path or shutil.which("bwrap")
    if path is None:
        return "bubblewrap (bwrap) is not installed: `apt-get install bubblewrap` (Debian, Ubuntu)"
    try:
        result = subprocess.run([path, "--ro-bind", "/", "/", "--unshare-all", "--die-with-parent", "--", "true"],
                                capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"{path} does not run: {err}"
    if result.returncode != 0:
        return (f"{path} cannot create a sandbox here ({result.stderr.strip() or result.returncode}); "
                "it needs unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1) or root")
    return None


def unsafe_requested() -> bool:
    return os.environ.get(UNSAFE_VARIABLE, "") not in ("", "0")


def environment_paths() -> list[Path]:
    """The folders the kernel's Python needs, read-only: its prefixes and the lmlab package."""
    import lmlab

    paths = [Path(sys.prefix), Path(sys.base_prefix), Path(lmlab.__file__).resolve().parent]
    unique: list[Path] = []
    for p in paths:
        for q in (p, p.resolve()):
            if q.is_dir() and q not in unique:
                unique.append(q)
    return unique


def check_not_exposed(paths: list[Path], secret: list[Path]) -> None:
    """Refuse to sandbox when a folder to show the kernel holds something it must not read."""
    for p in paths:
        for s in secret:
            s = s.resolve()
            if s == p or p in s.parents:
                raise SandboxUnavailable(
                    f"the Python environment folder {p} holds {s}, which submissions must not read; "
                    "grade from a Python environment outside the course folder (or a virtual environment in it)")


def bwrap_command(kernel: list[str], box: Path, env: dict[str, str], work_bytes: int, bwrap: str = "bwrap",
                  secret: list[Path] = ()) -> list[str]:
    """The ``bwrap`` command line that runs ``kernel`` (a guarded-kernel command) in the sandbox.

    ``box`` holds ``submission/`` (shown read-only) and ``run/`` (the connection file and the sockets,
    writable); ``env`` is the whole environment the kernel gets.
    """
    args = [bwrap, "--unshare-all", "--die-with-parent", "--cap-drop", "ALL", "--ro-bind", "/usr", "/usr"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        p = Path("/") / name
        if p.is_symlink():
            args += ["--symlink", os.readlink(p), str(p)]
        elif p.is_dir():
            args += ["--ro-bind", str(p), str(p)]
    for name in ETC_FILES:
        args += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    args += ["--proc", "/proc", "--dev", "/dev", "--size", str(work_bytes), "--tmpfs", "/tmp"]
    paths = environment_paths()
    check_not_exposed(paths, list(secret))
    for p in paths:
        args += ["--ro-bind", str(p), str(p)]
    args += ["--ro-bind", str(box / "submission"), "/sandbox/submission",
             "--size", str(work_bytes), "--tmpfs", "/sandbox/work",
             "--bind", str(box / "run"), str(box / "run"), "--chdir", "/sandbox/work",
             "--remount-ro", "/", "--clearenv"]
    for key, value in env.items():
        args += ["--setenv", key, value]
    return [*args, "--", *kernel]


class SandboxKernelManager(AsyncKernelManager):
    """Starts each kernel guarded (``lmlab.kernelguard``) and, unless ``unsafe``, inside ``bwrap``.

    Settings (``c.SandboxKernelManager.<name>`` in nbgrader_config.py) are the limits of one submission.
    ``guard_key`` is set by the grader that created this manager (``course/execute.py``).
    """

    memory_bytes = Integer(3 * GiB, help="memory of each process of the kernel (RLIMIT_DATA)").tag(config=True)
    total_memory_bytes = Integer(4 * GiB, help="memory of all its processes together (a memory cgroup, "
                                               "where this user may create one)").tag(config=True)
    processes = Integer(64, help="processes and threads of the kernel (a pids cgroup, or RLIMIT_NPROC)").tag(
        config=True)
    file_bytes = Integer(64 * MiB, help="size of any file the kernel writes (RLIMIT_FSIZE)").tag(config=True)
    open_files = Integer(512, help="open files of each process (RLIMIT_NOFILE)").tag(config=True)
    work_bytes = Integer(512 * MiB, help="size of the working folder and of /tmp (tmpfs)").tag(config=True)
    bwrap = Unicode("", help="the bwrap executable (default: found on PATH)").tag(config=True)
    unsafe = Bool(False, help="grade without a sandbox when bwrap is unavailable (also: the environment "
                              f"variable {UNSAFE_VARIABLE}=1)").tag(config=True)
    guard_key = Unicode("")
    secret_paths = [Path(__file__).resolve().parent.parent / "assessments", Path(__file__).resolve().parent / "grading"]

    @default("transport")
    def _transport_default(self) -> str:
        return "ipc"  # Unix sockets: the kernel has no network at all

    def _limits(self) -> dict[str, int]:
        return {"memory_bytes": self.memory_bytes, "file_bytes": self.file_bytes, "open_files": self.open_files}

    async def _async_pre_start_kernel(self, **kw):  # noqa: ANN003, ANN202
        if not self.guard_key:
            raise RuntimeError("SandboxKernelManager.guard_key is not set: the grader sets it")
        self.sandboxed = not (self.unsafe or unsafe_requested())
        if self.sandboxed:
            why = probe_bwrap(self.bwrap or None)
            if why:
                raise SandboxUnavailable(
                    f"cannot grade in a sandbox: {why}. To grade anyway, without isolation (only for "
                    f"submissions you trust), pass --unsafe to `python -m course autograde` or set {UNSAFE_VARIABLE}=1")
        # the grader's SIGINT does not reach into the sandbox's process group: ask the kernel to interrupt
        # itself over its control socket instead
        self.kernel_spec.interrupt_mode = "message"
        parent = os.environ.get(BOX_VARIABLE) or None
        self.box = Path(tempfile.mkdtemp(prefix="lmlab-box-", dir=parent))
        (self.box / "run").mkdir()
        (self.box / "submission").mkdir()
        self.cgroups: list[Path] = []
        self.connection_file = str(self.box / "run" / "kernel.json")
        self.ip = str(self.box / "run" / "ipc")
        key_file = self.box / "run" / "guard.key"  # read and deleted by the kernel before any notebook code
        key_file.touch(mode=0o600)
        key_file.write_text(self.guard_key)
        env = {k: v for k, v in (kw.pop("env", None) or os.environ).items()}
        kernel_env = {k: env[k] for k in KEPT_VARIABLES if k in env}
        limits = self._limits()
        if os.geteuid() != 0:
            limits["processes"] = self.processes + _tasks_of_this_user()
        kernel_env.update(
            PATH=os.pathsep.join([str(Path(sys.executable).parent), "/usr/local/bin", "/usr/bin", "/bin"]),
            LMLAB_GUARD_KEY_FILE=str(key_file),
            LMLAB_SANDBOX_LIMITS=json.dumps(limits),
            LMLAB_SANDBOX_SUBMISSION="/sandbox/submission" if self.sandboxed else str(self.box / "submission"),
            LMLAB_SANDBOX_WORK="/sandbox/work" if self.sandboxed else str(self.box / "work"),
            HOME="/sandbox/work" if self.sandboxed else str(self.box / "work"),
            TMPDIR="/tmp" if self.sandboxed else str(self.box / "tmp"),
            MPLCONFIGDIR="/tmp/matplotlib" if self.sandboxed else str(self.box / "tmp" / "matplotlib"),
            IPYTHONDIR="/tmp/ipython" if self.sandboxed else str(self.box / "tmp" / "ipython"),
            JUPYTER_RUNTIME_DIR=str(self.box / "run"),
            JUPYTER_CONFIG_DIR="/tmp/jupyter" if self.sandboxed else str(self.box / "tmp" / "jupyter"),
            JUPYTER_DATA_DIR="/tmp/jupyter-data" if self.sandboxed else str(self.box / "tmp" / "jupyter-data"),
            JUPYTER_PLATFORM_DIRS="1",
        )
        if not self.sandboxed:
            (self.box / "tmp").mkdir()
            kernel_env = {**env, **kernel_env}
        kw["env"] = kernel_env
        self._kernel_env = kernel_env
        return await super()._async_pre_start_kernel(**kw)

    def format_kernel_cmd(self, extra_arguments: list[str] | None = None) -> list[str]:
        cmd = super().format_kernel_cmd(extra_arguments)
        if cmd[1:3] != ["-m", "ipykernel_launcher"]:
            raise ValueError(f"graded notebooks run the Python kernel (python -m ipykernel_launcher), not {cmd!r}")
        kernel = [cmd[0], "-m", "lmlab.kernelguard", *cmd[3:]]
        cgroups = {"pids.max": self.processes, "memory.limit_in_bytes": self.total_memory_bytes}
        launch = [sys.executable, str(LAUNCHER), "--box", str(self.box), "--cgroups", json.dumps(cgroups)]
        if not self.sandboxed:
            return [*launch, "--", *kernel]
        command = bwrap_command(kernel, self.box, self._kernel_env, self.work_bytes, self.bwrap or "bwrap",
                                secret=self.secret_paths)
        return [*launch, "--", *command]

    async def _async_cleanup_resources(self, restart: bool = False) -> None:
        await super()._async_cleanup_resources(restart=restart)
        box = getattr(self, "box", None)
        if box is not None and not restart:
            from course.sandbox_launch import remove_cgroups

            remove_cgroups(box)
            shutil.rmtree(box, ignore_errors=True)


def _tasks_of_this_user() -> int:
    """Processes and threads this user runs now (RLIMIT_NPROC counts them all)."""
    uid, count = os.getuid(), 0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    count += sum(1 for _ in (entry / "task").iterdir())
            except OSError:
                continue
    return count

