"""Code that runs inside a sandbox worker process: load one candidate, serve its balancer calls.

The worker is forked from a warm server that already imported torch, so a fresh process per candidate
costs milliseconds and no candidate can leave state behind for the next one. Before candidate code is
loaded the worker captures its clock, sets resource limits, times the reference balancer, and installs
an audit hook that refuses file access outside the Python installation, sockets, new processes and
foreign libraries. Windows arrive one at a time: the candidate never holds a window it is scored on
before it has answered for the window before.
"""
from __future__ import annotations

import builtins
import os
import resource
import signal
import sys
import sysconfig
import time
import traceback
from typing import Any

import numpy as np
import torch

from evaluator.sandbox import wire

_BLOCKED_EVENTS = {
    "subprocess.Popen": "starting processes",
    "os.system": "starting processes",
    "os.exec": "starting processes",
    "os.posix_spawn": "starting processes",
    "os.spawn": "starting processes",
    "os.fork": "starting processes",
    "os.forkpty": "starting processes",
    "pty.spawn": "starting processes",
    "ctypes.dlopen": "loading native libraries",
    "ctypes.dlsym": "loading native libraries",
    "os.remove": "changing files",
    "os.rename": "changing files",
    "os.rmdir": "changing files",
    "os.mkdir": "changing files",
    "os.truncate": "changing files",
    "os.chmod": "changing files",
    "os.chown": "changing files",
    "os.link": "changing files",
    "os.symlink": "changing files",
    "shutil.rmtree": "changing files",
    "os.kill": "signalling processes",
    "os.killpg": "signalling processes",
    "os.putenv": "changing the environment",
}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _readable_roots() -> tuple[str, ...]:
    """Where imports come from: the standard library and installed packages, nothing else."""
    paths = sysconfig.get_paths()
    roots = {paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths}
    roots.update(p for p in sys.path if p and ("site-packages" in p or p.endswith("lib-dynload")))
    return tuple(os.path.realpath(r) + os.sep for r in roots if r)


READABLE_ROOTS = _readable_roots()  # computed once in the zygote: sysconfig is slow on first use


def install_audit_hook() -> None:
    roots = READABLE_ROOTS
    realpath = os.path.realpath
    busy = [False]

    def hook(event: str, args: tuple) -> None:
        if event == "open":
            path, mode, flags = args
            if path is None or isinstance(path, int) or busy[0]:
                return
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & _WRITE_FLAGS
            )
            busy[0] = True
            try:
                full = realpath(os.fsdecode(path))
            finally:
                busy[0] = False
            if writing or not full.startswith(roots):
                raise PermissionError(f"sandbox: {'writing' if writing else 'reading'} files is not allowed ({full})")
        elif event.startswith("socket."):
            raise PermissionError("sandbox: network access is not allowed")
        elif event in _BLOCKED_EVENTS:
            raise PermissionError(f"sandbox: {_BLOCKED_EVENTS[event]} is not allowed ({event})")

    sys.addaudithook(hook)


def _set_limits(memory_mb: int, output_bytes: int, timeout_s: float) -> None:
    with open("/proc/self/status") as fh:
        vm = next((int(line.split()[1]) for line in fh if line.startswith("VmSize:")), 0)
    address_space = vm * 1024 + memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))
    resource.setrlimit(resource.RLIMIT_FSIZE, (output_bytes, output_bytes))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    cpu = int(timeout_s) + 10  # a safety net: the harness kills at the timeout, this ends a worker it lost
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the cap fails instead of killing us


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    message = text[0] if text else ""
    if isinstance(exc, MemoryError) or "can't allocate memory" in message or "out of memory" in message.lower():
        return "memory limit exceeded: the balancer tried to allocate more than the sandbox allows"
    if isinstance(exc, OSError) and exc.errno == 27:  # EFBIG
        return "output limit exceeded: the balancer printed more than the sandbox keeps"
    tb = traceback.extract_tb(exc.__traceback__)
    where = next((f" (line {f.lineno})" for f in reversed(tb) if f.filename == "<candidate>"), "")
    return f"{type(exc).__name__}{where}: {message}"[:400]


def _to_arrays(out: Any) -> tuple[list[np.ndarray], str]:
    if not isinstance(out, (tuple, list)) or len(out) != 3:
        kind = type(out).__name__ + (f" of length {len(out)}" if isinstance(out, (tuple, list)) else "")
        return [], f"output types: rebalance_experts must return (phy2log, log2phy, logcnt), got {kind}"
    arrays = []
    for name, value in zip(("phy2log", "log2phy", "logcnt"), out):
        if not isinstance(value, torch.Tensor):
            return [], f"output types: {name} must be a torch.Tensor, got {type(value).__name__}"
        if value.is_complex() or value.dtype == torch.bool:
            return [], f"dtype: {name} must be int64, got {value.dtype}"
        arrays.append(value.detach().cpu().numpy())
    return arrays, ""


def _timed_call(fn: Any, clock: Any, weight: torch.Tensor, args: tuple, cuda: bool) -> tuple[Any, int]:
    start = clock()
    out = fn(weight, *args)
    if cuda:
        torch.cuda.synchronize()
    return out, clock() - start


def _variants(window: np.ndarray, count: int) -> list[np.ndarray]:
    """Distinct copies of a window (one count moved per copy), so no call can be answered from a memo."""
    out = []
    flat_max = int(np.argmax(window))
    for i in range(count):
        copy = window.copy()
        copy.flat[flat_max] += i + 1
        out.append(copy)
    return out


def worker_main(conn: Any, job: dict[str, Any]) -> None:
    """Entry point of a worker process. `job` carries the candidate code and the settings."""
    clock = time.perf_counter_ns  # captured before any candidate code exists
    os.setpgid(0, 0)  # our own process group, so the harness can kill everything we start
    sys.dont_write_bytecode = True
    out_fd = os.open(job["stdout_path"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    err_fd = os.open(job["stderr_path"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(out_fd, 1)
    os.dup2(err_fd, 2)
    torch.set_num_threads(int(job.get("threads", 1)))
    device = torch.device(job.get("device", "cpu"))
    cuda = device.type == "cuda"
    args = tuple(job["args"])
    send = conn.send_bytes

    # Reference balancer, timed on distinct copies of the first window before the candidate can touch anything.
    first = job["first_window"]
    ref_times: list[int] = []
    warmup_ns = 0
    if job.get("reference_code") and job.get("reference_calls", 0) > 0:
        ref_ns: dict[str, Any] = {"__name__": "reference"}
        exec(compile(job["reference_code"], "<reference>", "exec"), ref_ns)
        ref_fn = ref_ns[job["entry"]]
        # One untimed call first: a fresh process pays page faults until malloc has grown its heap, and
        # timing that would flatter every candidate measured against the reference.
        warmup_ns = _timed_call(ref_fn, clock, torch.from_numpy(first.copy()).to(device), args, cuda)[1]
        for variant in _variants(first, int(job["reference_calls"])):
            weight = torch.from_numpy(variant).to(device)
            ref_times.append(_timed_call(ref_fn, clock, weight, args, cuda)[1])

    _set_limits(int(job["memory_mb"]), int(job["output_bytes"]), float(job.get("timeout_s", 60.0)))
    install_audit_hook()

    namespace: dict[str, Any] = {"__name__": "candidate", "__builtins__": builtins}
    try:
        code = compile(job["code"], "<candidate>", "exec")
    except SyntaxError as exc:
        send(wire.encode({"type": "error", "error": f"syntax error on line {exc.lineno}: {exc.msg}"}))
        return
    try:
        exec(code, namespace)
    except BaseException as exc:  # noqa: BLE001 - anything a candidate raises at import is its error
        send(wire.encode({"type": "error", "error": f"program raised while loading: {_describe(exc)}"}))
        return
    fn = namespace.get(job["entry"])
    if not callable(fn):
        send(wire.encode({"type": "error", "error": f"the program defines no function {job['entry']}()"}))
        return
    send(wire.encode({"type": "ready", "reference_ns": ref_times, "warmup_ns": warmup_ns}))

    window = first
    index = 0
    while True:
        weight = torch.from_numpy(window).to(device)
        try:
            out, elapsed = _timed_call(fn, clock, weight, args, cuda)
        except BaseException as exc:  # noqa: BLE001
            send(wire.encode({"type": "error", "error": f"{job['entry']} raised on window {index}: {_describe(exc)}"}))
            return
        arrays, problem = _to_arrays(out)
        if problem:
            send(wire.encode({"type": "error", "error": f"window {index}: {problem}"}))
            return
        send(wire.encode({"type": "placement", "index": index, "elapsed_ns": elapsed}, arrays))
        header, arrays = wire.decode(conn.recv_bytes())
        if header.get("type") != "window":
            return
        window = arrays[0].copy()  # writable: the candidate owns its input
        index = int(header["index"])
