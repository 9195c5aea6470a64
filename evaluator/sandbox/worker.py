"""Code that runs inside a sandbox worker process: load one candidate, serve its balancer calls.

The worker is forked from a warm server that already imported torch, so a fresh process per candidate
costs milliseconds and no candidate can leave state behind for the next one. It runs as PID 1 of its
own namespaces inside the bubblewrap sandbox (see `confine` and `bwrap`): that is the barrier. Before
candidate code is loaded it sets resource limits and installs an audit hook that refuses file access
outside the Python installation, sockets, new processes and foreign libraries: defence in depth only,
since code in the same process can undo it. Windows arrive one at a time: the candidate never holds a
window it is scored on before it has answered for the window before. The worker keeps no clock: the
harness times each call around its round trip, and everything the worker sends is checked there.
"""
from __future__ import annotations

import builtins
import os
import resource
import signal
import socket
import sys
import sysconfig
import traceback
from multiprocessing.connection import Connection
from typing import Any

import numpy as np
import torch

from evaluator.sandbox import transport, wire

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
MAX_FILES = 256  # open file descriptors of a candidate
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


def address_space_bytes() -> int:
    """This process's current address space (read while /proc is still visible, before `confine.seal`)."""
    with open("/proc/self/status") as fh:
        return next((int(line.split()[1]) * 1024 for line in fh if line.startswith("VmSize:")), 0)


def _set_limits(base_bytes: int, memory_mb: int, output_bytes: int, timeout_s: float) -> None:
    address_space = base_bytes + memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))
    resource.setrlimit(resource.RLIMIT_FSIZE, (output_bytes, output_bytes))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # kernel buffers (socket pairs, pipes) are memory RLIMIT_AS does not count: a few per descriptor
    resource.setrlimit(resource.RLIMIT_NOFILE, (MAX_FILES, MAX_FILES))
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


def _form_problem(name: str, value: Any, expected: tuple[int, ...]) -> str:
    """What is wrong with one output before it may be copied: exact type, dtype, shape (contract wording)."""
    if not isinstance(value, torch.Tensor):
        return f"output types: {name} must be a torch.Tensor, got {type(value).__name__}"
    if type(value) is not torch.Tensor:  # a subclass could defer its work past the timed region
        return f"output types: {name} must be a plain torch.Tensor, not the subclass {type(value).__name__}"
    if value.dtype != torch.int64:
        return f"dtype: {name} must be int64, got {str(value.dtype).removeprefix('torch.')}"
    shape = tuple(value.shape)
    if name == "log2phy":
        if len(shape) != 3 or shape[:2] != expected[:2]:
            return f"shape: log2phy must be [{expected[0]}, {expected[1]}, X], got {list(shape)}"
        if not 1 <= shape[2] <= expected[2]:
            return f"shape: log2phy has room for {shape[2]} replicas per expert; it must be 1 to {expected[2]}"
    elif shape != expected:
        return f"shape: {name} must be {list(expected)}, got {list(shape)}"
    return ""


def _materialise(out: Any, layers: int, experts: int, replicas: int) -> tuple[list[np.ndarray], str]:
    """The three outputs as contiguous int64 arrays on the CPU, made here, inside the timed region.

    log2phy is cut after its widest expert (`logcnt.max()`) when only -1 follows: the contract lets it be
    as wide as num_replicas, and a balancer that pads it fully (DeepSeek's: 33 columns on the standard
    shape, about 9 of them used) would otherwise send, and have the harness read, four times the bytes.
    A cut changes nothing the harness checks or scores (it checks whatever arrives, and past logcnt the
    contract wants -1 anyway); anything but -1 past the widest expert is sent whole, for the harness to
    name. No copy is made where the output already is a contiguous CPU tensor: the message is written
    from it directly (`wire.encode_parts`), still inside the timed call."""
    if not isinstance(out, (tuple, list)) or len(out) != 3:
        kind = type(out).__name__ + (f" of length {len(out)}" if isinstance(out, (tuple, list)) else "")
        return [], f"output types: rebalance_experts must return (phy2log, log2phy, logcnt), got {kind}"
    expected = {"phy2log": (layers, replicas), "log2phy": (layers, experts, replicas), "logcnt": (layers, experts)}
    tensors = []
    for name, value in zip(expected, out):
        problem = _form_problem(name, value, expected[name])
        if problem:
            return [], problem
        tensors.append(torch.Tensor.contiguous(torch.Tensor.to(value, "cpu")))
    log2phy, logcnt = tensors[1], tensors[2]
    width = min(max(int(torch.Tensor.max(logcnt)), 1), log2phy.shape[2])
    if width < log2phy.shape[2] and bool(torch.Tensor.all(torch.Tensor.eq(log2phy[:, :, width:], -1))):
        tensors[1] = torch.Tensor.contiguous(log2phy[:, :, :width])
    return [torch.Tensor.numpy(t) for t in tensors], ""


def _receive_streams(sock: socket.socket) -> None:
    """stdout and stderr: two files the harness opened and passed over the socket (no path on the host)."""
    _data, fds, _flags, _addr = socket.recv_fds(sock, 1, 2)
    if len(fds) != 2:
        os._exit(0)  # the harness went away before assigning a job
    os.dup2(fds[0], 1)
    os.dup2(fds[1], 2)
    for fd in fds:
        os.close(fd)


def _rehearse() -> None:
    """Walk the path of a job once on made-up data while the worker waits on standby.

    A worker shares its memory with the zygote until it writes to it; the first pass through decoding,
    tensor conversion, checking, encoding and compiling copies the pages it touches, a few milliseconds
    that would otherwise fall between the harness handing over a program and the program's first call.
    Nothing of a job exists yet: this is the harness's own code on zeros."""
    layers, experts, replicas = 4, 16, 20
    _, arrays = wire.decode(wire.encode({"type": "window", "index": 0}, [np.zeros((layers, experts), np.int64)]))
    weight = torch.from_numpy(arrays[0].copy()).to("cpu")
    logcnt = torch.ones_like(weight)
    logcnt[:, : replicas - experts] += 1
    out = (torch.zeros(layers, replicas, dtype=torch.int64), torch.full((layers, experts, 2), -1, dtype=torch.int64),
           logcnt)
    placement, _ = _materialise(out, layers, experts, replicas)
    b"".join(wire.encode_parts({"type": "placement", "index": 0}, placement))
    namespace: dict[str, Any] = {"__name__": "rehearsal", "__builtins__": builtins}
    exec(compile("def entry(weight, *args):\n    return weight.sum(-1)\n", "<rehearsal>", "exec"), namespace)
    namespace["entry"](weight)


def worker_main(sock: socket.socket, base_bytes: int) -> None:
    """Entry point of a worker process: wait for a job, load the candidate, answer one window at a time.

    The harness times every call around its round trip; nothing measured here is trusted."""
    _rehearse()
    _receive_streams(sock)
    conn = Connection(sock.detach())
    job = conn.recv()  # from the harness, which is trusted; everything sent back is not

    def send(message: bytes | list[bytes | memoryview]) -> None:
        for stream in (sys.stdout, sys.stderr):  # the harness kills us after the last reply
            try:
                stream.flush()
            except Exception:  # noqa: BLE001 - a stream the candidate replaced or broke: its output is lost
                pass
        transport.write_parts(conn.fileno(), message if isinstance(message, list) else [message])

    send(wire.encode({"type": "accepted"}))  # from here on a failure is the candidate's
    sys.dont_write_bytecode = True
    torch.set_num_threads(int(job.get("threads", 1)))
    device = torch.device(job.get("device", "cpu"))
    cuda = device.type == "cuda"
    args = tuple(job["args"])
    layers, experts = job["shape"]
    replicas = int(args[0])
    _set_limits(base_bytes, int(job["memory_mb"]), int(job["output_bytes"]), float(job.get("timeout_s", 60.0)))
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
    send(wire.encode({"type": "ready"}))

    while True:
        try:
            message = conn.recv_bytes()
        except EOFError:  # the harness closed the socket: the job is over (no word is sent that it is)
            return
        header, arrays = wire.decode(message)
        if header.get("type") != "window":
            return
        index = int(header["index"])
        shown = max(index, 0)  # -1 is the untimed warm-up call on a copy of window 0
        # the timed region (the harness's clock runs from sending the window to receiving this reply)
        weight = torch.from_numpy(arrays[0].copy()).to(device)  # writable: the candidate owns its input
        try:
            out = fn(weight, *args)
            if cuda:
                torch.cuda.synchronize()
            placement, problem = _materialise(out, layers, experts, replicas)
        except BaseException as exc:  # noqa: BLE001
            send(wire.encode({"type": "error", "error": f"{job['entry']} raised on window {shown}: {_describe(exc)}"}))
            return
        if problem:
            send(wire.encode({"type": "error", "error": f"window {shown}: {problem}"}))
            return
        # the window's token, which the harness checks: no reply can be written before its window is sent
        send(wire.encode_parts({"type": "placement", "index": index, "token": header.get("token")}, placement))
