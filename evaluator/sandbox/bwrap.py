"""The bubblewrap command line that puts the sandbox's zygote in its own namespaces.

The zygote (and every worker it forks) sees a root made of read-only binds of exactly what Python and
torch need: the Python installation, the virtual environment and its site-packages, the directories of
the shared libraries this process has loaded, the dynamic loader's cache, and the project's
`evaluator/` package. Nothing else of the host: not the trace cache, not `results/`, not any home
directory, not the host's `/tmp`. It runs as uid 65534 in new user, PID, network, IPC, UTS and cgroup
namespaces with no capabilities and an environment reduced to what Python needs.

`probe()` runs a tiny program through the same command once per process and says why isolation is not
available on this machine, if it is not.
"""
from __future__ import annotations

import functools
import glob
import os
import shutil
import site
import subprocess
import sys
import sysconfig

from evaluator.paths import REPO_ROOT

NOBODY = "65534"
# directories the dynamic loader and the Python binary's interpreter path may go through
_LOADER_DIRS = ("/lib", "/lib32", "/lib64", "/libx32", "/usr/lib64")
_SYSTEM_LIBRARY_ROOTS = ("/usr/", "/lib", "/opt/")
_ENV = {
    "PATH": "/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "HOME": "/scratch",
    "TMPDIR": "/scratch",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONNOUSERSITE": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
}
FIX = (
    "install bubblewrap (apt-get install bubblewrap) and allow unprivileged user namespaces "
    "(sysctl -w kernel.unprivileged_userns_clone=1, or user.max_user_namespaces > 0, or on Ubuntu "
    "kernel.apparmor_restrict_unprivileged_userns=0), or pass --unsafe-no-isolation to run without OS "
    "isolation (every result is then stamped unisolated)"
)


def _loaded_library_dirs() -> set[str]:
    """System directories of the shared objects this process has mapped (libc, libstdc++, libgomp ...).

    Libraries inside the Python installation come with it; anything elsewhere (a home, /tmp) is left out."""
    dirs: set[str] = set()
    try:
        with open("/proc/self/maps") as fh:
            for line in fh:
                path = line.rstrip("\n").split(None, 5)[-1]
                if path.startswith(_SYSTEM_LIBRARY_ROOTS) and ".so" in os.path.basename(path):
                    dirs.add(os.path.dirname(path))
    except OSError:
        pass
    return dirs


def _python_dirs() -> set[str]:
    """The Python installation, the virtual environment and every site-packages directory on sys.path."""
    paths = sysconfig.get_paths()
    dirs = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    dirs.update(paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths)
    dirs.update(site.getsitepackages())
    dirs.update(p for p in sys.path if p.endswith(("site-packages", "dist-packages", "lib-dynload")))
    dirs.add(os.path.dirname(os.path.realpath(sys.executable)))
    return dirs


def _minimal(paths: set[str]) -> list[str]:
    """Existing real paths with every path inside another one dropped, sorted: a deterministic bind list."""
    real = sorted({os.path.realpath(p) for p in paths if p and os.path.exists(p)})
    kept: list[str] = []
    for path in real:
        if not any(path == k or path.startswith(k.rstrip("/") + "/") for k in kept):
            kept.append(path)
    return kept


@functools.cache
def read_only_binds() -> tuple[str, ...]:
    """What the sandbox sees of the host, read-only (computed once per process)."""
    wanted = _python_dirs() | _loaded_library_dirs() | {str(REPO_ROOT / "evaluator"), "/etc/ld.so.cache"}
    wanted |= {d for d in _LOADER_DIRS if os.path.isdir(d) and not os.path.islink(d)}
    return tuple(_minimal(wanted))


def _device_args(device: str) -> list[str]:
    if not device.startswith("cuda"):
        return []
    args: list[str] = []
    for node in sorted(glob.glob("/dev/nvidia*")):  # the driver's character devices, nothing else of /dev
        args += ["--dev-bind", node, node]
    args += ["--ro-bind-try", "/sys", "/sys", "--ro-bind-try", "/etc/nvidia", "/etc/nvidia"]
    for path in _cuda_library_dirs():  # where a container or module system keeps libcuda
        args += ["--ro-bind-try", path, path]
    return args


def _cuda_library_dirs() -> list[str]:
    dirs = [d for d in os.environ.get("LD_LIBRARY_PATH", "").split(":") if d.startswith("/") and os.path.isdir(d)]
    return [d for d in _minimal(set(dirs)) if d not in read_only_binds()]


def environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The only variables the sandbox gets: no API keys, nothing of the user's environment."""
    env = dict(_ENV, PYTHONPATH=str(REPO_ROOT))
    env.update(extra or {})
    return env


def command(argv: list[str], device: str = "cpu", env: dict[str, str] | None = None) -> list[str]:
    """The bwrap command line that runs `argv` in the sandbox."""
    bwrap = shutil.which("bwrap") or "bwrap"
    env = dict(env or {})
    if device.startswith("cuda") and os.environ.get("LD_LIBRARY_PATH"):
        env["LD_LIBRARY_PATH"] = ":".join(_cuda_library_dirs())
    args = [
        bwrap, "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
        "--uid", NOBODY, "--gid", NOBODY, "--hostname", "sandbox", "--clearenv",
    ]
    for key, value in sorted(environment(env).items()):
        args += ["--setenv", key, value]
    # /tmp first: a checkout or venv that lives under /tmp is bound on top of it, not hidden beneath it
    args += ["--tmpfs", "/tmp"]
    for path in read_only_binds():
        args += ["--ro-bind", path, path]
    for link in _LOADER_DIRS:  # merged-/usr systems: /lib -> usr/lib and the like
        if os.path.islink(link):
            args += ["--symlink", os.readlink(link), link]
    args += ["--proc", "/proc", "--dev", "/dev", *_device_args(device)]
    args += ["--dir", "/scratch", "--chdir", "/scratch", "--"]
    return args + argv


_PROBE = (
    "import ctypes, os, sys\n"
    "flags = 0x10000000 | 0x20000000 | 0x00020000 | 0x40000000 | 0x08000000\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    "sys.exit(0 if libc.unshare(flags) == 0 else 'nested namespaces refused: ' + os.strerror(ctypes.get_errno()))\n"
)


@functools.cache
def probe() -> str:
    """Empty when the sandbox can be built here, else one line saying why (cached for the process)."""
    if shutil.which("bwrap") is None:
        return "bubblewrap (bwrap) is not installed"
    try:
        proc = subprocess.run(command([sys.executable, "-S", "-c", _PROBE]), capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bwrap could not run ({exc})"
    if proc.returncode != 0:
        lines = (proc.stderr.strip() or f"exit code {proc.returncode}").splitlines()
        return f"bwrap failed: {lines[-1][:200]}"
    return ""


def unavailable_message(reason: str) -> str:
    return f"the sandbox cannot isolate candidate programs on this machine: {reason}; {FIX}"
