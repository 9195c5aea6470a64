"""Every bad program gets correct=False and one clear line, and the harness survives them all.

All cases run against one task object in this process, so the last test also proves the harness
went on after each of them.
"""
from __future__ import annotations

import os
import socket

import pytest

from evaluator.task import EplbTask
from tests.evaluator_helpers import SEED_CODE, small_task, wrap_seed


@pytest.fixture(scope="module")
def task(tmp_path_factory: pytest.TempPathFactory) -> EplbTask:
    return small_task(tmp_path_factory.mktemp("bad"), timeout_s=8.0)


CASES = {
    "syntax error": ("def rebalance_experts(:\n", "syntax error on line 1"),
    "no entry function": ("import torch\ndef balance(w):\n    return w\n", "defines no function rebalance_experts"),
    "raises at import": ("raise RuntimeError('broken at import')\n", "raised while loading: RuntimeError"),
    "raises": (wrap_seed("raise ValueError('boom')"), "raised on window 0: ValueError"),
    "wrong output type": (wrap_seed("p = p.tolist()"), "output types: phy2log must be a torch.Tensor, got list"),
    "wrong arity": (SEED_CODE + "\n_r = rebalance_experts\ndef rebalance_experts(*a):\n    return _r(*a)[:2]\n",
                    "must return (phy2log, log2phy, logcnt), got tuple of length 2"),
    "wrong shape": (wrap_seed("p = p[:, :-1]"), "shape: phy2log must be [4, 24], got [4, 23]"),
    "wrong dtype": (wrap_seed("c = c.int()"), "dtype: logcnt must be int64, got int32"),
    "NaN": (wrap_seed("p = p.double()\np[0, 0] = float('nan')"), "dtype: phy2log must be int64, got float64"),
    "id out of range": (wrap_seed("p[0, 3] = 99"), "id range: phy2log[0, 3] = 99"),
    "wrong counts": (wrap_seed("c[2, 5] += 1"), "replica count: logcnt row of layer 2 sums to 25"),
    "zero replicas for a loaded expert": (
        wrap_seed("c[1, 1] += c[1, 0]\nc[1, 0] = 0\np[1][p[1] == 0] = 1"),
        "zero replicas: expert 0 in layer 1 has logcnt 0 though it carries",
    ),
    "inconsistent maps": (wrap_seed("l = l.clone()\nl[0, 0, 0], l[0, 1, 0] = l[0, 1, 0].item(), l[0, 0, 0].item()"),
                          "inconsistent maps: log2phy[0, 0, 0]"),
    "log2phy padding": (wrap_seed("l = torch.cat([l, torch.zeros_like(l[..., :1])], -1)"), "past logcnt must be -1"),
    "infinite loop": (wrap_seed("while True:\n    pass"), "timed out after 8 s"),
    "memory blow-up (torch)": (wrap_seed("torch.empty(10**12, dtype=torch.uint8)"), "memory limit exceeded"),
    "memory blow-up (python)": (wrap_seed("blob = [bytes(10**9) for _ in range(64)]"), "memory limit exceeded"),
    "os._exit": (wrap_seed("import os\nos._exit(3)"), "exited with code 3"),
    "segfault": (wrap_seed("import faulthandler\nfaulthandler._sigsegv()"), "crashed with SIGSEGV"),
    "flood of output": (wrap_seed("for _ in range(40):\n    print('x' * 1_000_000)"), "output limit exceeded"),
    "reading files": (wrap_seed("open('/etc/hostname').read()"), "sandbox: reading files is not allowed"),
    "writing files": (wrap_seed("open('/tmp/eplb-evolve-pwned', 'w').write('x')"),
                      "sandbox: writing files is not allowed"),
    "starting processes": (wrap_seed("import subprocess\nsubprocess.run(['true'])"),
                           "starting processes is not allowed"),
    "fork": (wrap_seed("import os\nos.fork()"), "starting processes is not allowed"),
    "native libraries": (wrap_seed("import ctypes\nctypes.CDLL(None).system(b'true')"), "loading native libraries"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_program_is_rejected_with_one_line(task: EplbTask, name: str) -> None:
    code, expected = CASES[name]
    result = task.evaluate(code)
    assert not result.correct, name
    assert expected in result.error, f"{name}: {result.error}"
    assert "\n" not in result.error
    assert result.evaluator_version and result.dataset["sha256"]


def test_network_is_blocked(task: EplbTask) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        result = task.evaluate(wrap_seed(f"import socket\nsocket.create_connection(('127.0.0.1', {port}))"))
    assert not result.correct
    assert "network access is not allowed" in result.error


def test_reading_the_trace_file_is_blocked(task: EplbTask) -> None:
    path = task.trace.meta["source"]
    result = task.evaluate(wrap_seed(f"open({path!r}, 'rb').read()"))
    assert not result.correct and "reading files is not allowed" in result.error


def test_moderate_output_is_kept_truncated(task: EplbTask) -> None:
    result = task.evaluate(wrap_seed("print('y' * 2_000_000)"))
    assert result.correct, result.error
    assert "bytes cut" in result.stdout
    assert len(result.stdout) < 10_000


def test_patching_the_time_module_does_not_fake_speed(task: EplbTask) -> None:
    code = wrap_seed("_sleep(0.03)") + (
        "\nimport time\n_sleep = time.sleep\n"
        "time.perf_counter = lambda: 0.0\ntime.perf_counter_ns = lambda: 0\ntime.monotonic = lambda: 0.0\n"
    )
    result = task.evaluate(code)
    assert result.correct, result.error
    assert result.metrics["runtime_median_s"] >= 0.03


def test_harness_survived_everything(task: EplbTask) -> None:
    result = task.evaluate(SEED_CODE)
    assert result.correct, result.error
    assert 0 < result.metrics["balancedness_gpu"] <= 1


def _descendants(pid: int) -> set[int]:
    """Every process below `pid` (the sandbox's bwrap, its init, the zygote, each worker's processes)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            parents.setdefault(ppid, []).append(int(entry))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _running(pid: int) -> bool:
    """Alive and not a zombie (a zombie's parent may simply not have reaped it yet)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_no_worker_outlives_a_killed_harness(tmp_path) -> None:
    """kill -9 of the harness mid-evaluation takes the sandbox, the zygote and the looping worker with it."""
    import signal
    import subprocess
    import sys
    import time

    from tests.evaluator_helpers import REPO

    script = tmp_path / "harness.py"
    script.write_text(
        f"import sys\nsys.path.insert(0, {str(REPO)!r})\nfrom pathlib import Path\n"
        "from tests.evaluator_helpers import small_task, wrap_seed\n"
        f"task = small_task(Path({str(tmp_path)!r}), timeout_s=120.0)\n"
        "print('evaluating', flush=True)\n"
        "task.evaluate(wrap_seed('while True:\\n    pass'))\n"
    )
    harness = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert harness.stdout.readline().strip() == "evaluating"
        deadline = time.monotonic() + 30
        # bwrap, the zygote, and two workers of three processes each: the looping one and the standby
        below: set[int] = set()
        while len(below) < 8 and time.monotonic() < deadline:
            time.sleep(0.2)
            below = _descendants(harness.pid)
        assert len(below) >= 8, below
        os.kill(harness.pid, signal.SIGKILL)
        harness.wait()
        deadline = time.monotonic() + 10
        alive = below
        while alive and time.monotonic() < deadline:
            time.sleep(0.1)
            alive = {pid for pid in alive if _running(pid)}
        assert not alive, f"processes outlived the harness: {sorted(alive)}"
    finally:
        harness.kill()
