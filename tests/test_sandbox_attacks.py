"""Hostile programs against the OS-isolated sandbox: each attack is contained, and the next innocent
program in the same harness scores normally.

Most attacks first switch off the worker's audit hook (found through `gc`, its code replaced), so what
stops them is the operating system: bubblewrap's view of the file system, the worker's own namespaces,
no network, no capabilities. Each program reports what it managed on stdout; the test checks both that
report and the host side (files unchanged, processes untouched).
"""
from __future__ import annotations

import hashlib
import json
import os
import resource
import socket
import sqlite3
import sys
import threading
import time
from pathlib import Path

import pytest

from evaluator.sandbox import harness
from evaluator.task import EplbTask
from tests.evaluator_helpers import REPO, SEED_CODE, small_task, wrap_seed

FAKE_KEY = "sk-test-3f9a7c1e5b2d4a6f8e0c9b7a5d3f1e2c"

# Switches off the audit hook the way an attacker would, and reports each attempt as TAG:OK or TAG:FAIL.
PRELUDE = r'''
import gc as _gc, os, sys, types as _types

def _disarm():
    done = 0
    for f in _gc.get_objects():
        if isinstance(f, _types.FunctionType) and f.__name__ == "hook" and "sandbox" in (f.__module__ or ""):
            names = f.__code__.co_freevars
            src = ("def _outer():\n" + "".join(f"    {v} = None\n" for v in names)
                   + "    def hook(event, args):\n        return [" + ", ".join(names)
                   + "] and None\n    return hook\n")
            ns = {}
            exec(src, ns)
            f.__code__ = ns["_outer"]().__code__
            done += 1
    print("DISARMED" if done else "NO-HOOK", flush=True)

def _try(tag, fn):
    try:
        value = fn()
        print(f"{tag}:OK:{str(value)[:60]!r}", flush=True)
    except BaseException as exc:
        print(f"{tag}:FAIL:{type(exc).__name__}", flush=True)

def _read(path):
    with open(path, "rb") as fh:
        return fh.read()

def _write(path, mode="wb"):
    with open(path, mode) as fh:
        fh.write(b"pwned")
    return "written"
'''


def hostile(attack: str, disarm: bool = True) -> str:
    """The seed balancer, followed by `attack`, which runs when the program is loaded."""
    check = "_disarm()\n_try('HOOKCHECK', lambda: _read('/etc/ld.so.cache')[:4])\n" if disarm else ""
    return SEED_CODE + PRELUDE + check + attack


def tags(result) -> dict[str, str]:
    """TAG -> OK/FAIL from a program's report."""
    out = {}
    for line in result.stdout.splitlines():
        parts = line.split(":", 2)
        if len(parts) >= 2 and parts[1] in ("OK", "FAIL"):
            out[parts[0]] = parts[1]
    return out


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def task(tmp_path_factory: pytest.TempPathFactory) -> EplbTask:
    """One isolated harness for every attack; a fake API key sits in its environment when the zygote starts."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OPENAI_API_KEY", FAKE_KEY)
        harness.shutdown()  # the zygote below starts with the key in the harness's environment
        task = small_task(tmp_path_factory.mktemp("attacks"), timeout_s=20.0)
        assert task.evaluate(SEED_CODE).correct
    yield task


def assert_innocent_scores(task: EplbTask) -> None:
    result = task.evaluate(SEED_CODE)
    assert result.correct, result.error
    assert 0 < result.metrics["balancedness_gpu"] <= 1
    assert "unisolated" not in result.metrics


def test_disarmed_hook_still_cannot_read_system_files_or_connect(task: EplbTask, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET")
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        server.settimeout(0.5)
        port = server.getsockname()[1]
        result = task.evaluate(hostile(
            f"_try('PASSWD', lambda: _read('/etc/passwd'))\n"
            f"_try('SHADOW', lambda: _read('/etc/shadow'))\n"
            f"_try('SECRET', lambda: _read({str(secret)!r}))\n"
            "import socket\n"
            f"_try('CONNECT', lambda: socket.create_connection(('127.0.0.1', {port}), timeout=2))\n"
            "_try('DNS', lambda: socket.getaddrinfo('example.com', 80))\n"
        ))
        with pytest.raises(socket.timeout):
            server.accept()  # nobody knocked
    assert result.correct, result.error
    assert "DISARMED" in result.stdout
    found = tags(result)
    assert found["HOOKCHECK"] == "OK"  # the hook really was off
    assert {found[t] for t in ("PASSWD", "SHADOW", "SECRET", "CONNECT", "DNS")} == {"FAIL"}, result.stdout
    assert "TOPSECRET" not in result.stdout
    assert_innocent_scores(task)


def test_fspath_that_changes_its_answer_reaches_nothing(task: EplbTask, tmp_path: Path) -> None:
    """A path object that answers the audit hook one thing and open() another (both orders tried)."""
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET")
    target = tmp_path / "written-by-candidate"
    result = task.evaluate(hostile(
        "class Shifty:\n"
        "    def __init__(self, then, first):\n        self.calls, self.then, self.first = 0, then, first\n"
        "    def __fspath__(self):\n"
        "        self.calls += 1\n"
        "        return os.__file__ if (self.calls == 1) == self.first else self.then\n"
        "for _first in (True, False):\n"
        f"    _try('READ', lambda: _read(Shifty({str(secret)!r}, _first)))\n"
        f"    _try('WRITE', lambda: _write(Shifty({str(target)!r}, _first)))\n",
        disarm=False,
    ))
    assert result.correct, result.error
    assert result.stdout.count("READ:") == 2 and "TOPSECRET" not in result.stdout
    assert "WRITE:OK" not in result.stdout
    assert not target.exists() and secret.read_text() == "TOPSECRET"
    assert_innocent_scores(task)


def test_trace_cache_run_directory_and_archive_are_out_of_reach(task: EplbTask, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    future = cache / "next-window.npy"
    future.write_bytes(b"the windows you will be scored on")
    run = tmp_path / "run"
    run.mkdir()
    archive = run / "archive.sqlite"
    with sqlite3.connect(archive) as db:
        db.execute("CREATE TABLE programs (id TEXT, score REAL)")
        db.execute("INSERT INTO programs VALUES ('seed', 0.9)")
    db.close()
    before = {p: digest(p) for p in (future, archive)}
    trace = task.trace.meta["source"]
    result = task.evaluate(hostile(
        f"_try('CACHE', lambda: _read({str(future)!r}))\n"
        f"_try('CACHEDIR', lambda: os.listdir({str(cache)!r}))\n"
        f"_try('TRACE', lambda: _read({str(trace)!r}))\n"
        f"_try('REPOCACHE', lambda: os.listdir({str(REPO / '.cache')!r}))\n"
        f"_try('RESULTS', lambda: os.listdir({str(REPO / 'results')!r}))\n"
        f"_try('CANDIDATES', lambda: _read({str(REPO / 'candidates' / 'seed.py')!r}))\n"
        f"_try('RUNDIR', lambda: os.listdir({str(run)!r}))\n"
        "import sqlite3\n"
        "def _forge():\n"
        f"    db = sqlite3.connect({str(archive)!r})\n"
        "    db.execute(\"UPDATE programs SET score = 0.0 WHERE id = 'seed'\")\n"
        "    db.execute(\"INSERT INTO programs VALUES ('me', 1.0)\")\n"
        "    db.commit()\n"
        "_try('SQLITE', _forge)\n"
        "_try('CACHEENV', lambda: os.environ['EPLB_EVOLVE_CACHE'])\n"
    ))
    assert result.correct, result.error
    found = tags(result)
    assert found.pop("HOOKCHECK") == "OK"
    assert set(found.values()) == {"FAIL"} and len(found) == 9, result.stdout
    assert {p: digest(p) for p in before} == before
    with sqlite3.connect(archive) as db:
        assert db.execute("SELECT id, score FROM programs").fetchall() == [("seed", 0.9)]
    db.close()
    assert_innocent_scores(task)


def _process_state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _ppid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def _sandbox_processes() -> tuple[list[int], int]:
    """Host pids of the isolated zygote's bwrap and everything below it, and the zygote's own pid."""
    from tests.test_bad_programs import _descendants

    bwrap_pid = harness._ZYGOTES[(True, "cpu")].process.pid
    below = sorted(_descendants(bwrap_pid))
    def program(pid: int) -> str:
        return os.path.basename(_cmdline(pid).split(" ")[0])

    # the zygote is the Python process right below bwrap (whose own command line names it too);
    # workers are its forks and have Python parents
    zygote = next(p for p in below if "evaluator.sandbox.zygote" in _cmdline(p)
                  and program(p) != "bwrap" and program(_ppid(p)) == "bwrap")
    return [bwrap_pid, *below], zygote


KILL_EVERYTHING = r'''
import ctypes, signal
_libc = ctypes.CDLL(None, use_errno=True)
_me = os.getpid()
_visible = []
# Broad attacks only where the namespace makes them harmless (we are PID 2 under our own init): should
# isolation ever regress, this test must fail on the sandbox's own processes, not kill the machine's.
_broad = _me == 2
for _pid in (list(range(1, 400)) if _broad else []) + HOST_PIDS:
    if _pid == _me:
        continue
    try:
        os.kill(_pid, 0)
        _visible.append(_pid)
    except OSError:
        pass
    for _sig in (signal.SIGSTOP, signal.SIGKILL):
        try:
            os.kill(_pid, _sig)
        except OSError:
            pass
    try:
        _fd = os.pidfd_open(_pid)
        for _sig in (signal.SIGSTOP, signal.SIGKILL):
            try:
                signal.pidfd_send_signal(_fd, _sig)
            except OSError:
                pass
    except OSError:
        pass
    _libc.ptrace(16, _pid, 0, 0)  # PTRACE_ATTACH
for _sig in (signal.SIGSTOP, signal.SIGKILL) if _broad else ():
    try:
        os.kill(-1, _sig)
    except OSError:
        pass
print("VISIBLE:" + ",".join(map(str, sorted(_visible))), flush=True)
_try("PROCFS", lambda: os.listdir("/proc"))
'''


def test_signals_pidfds_and_ptrace_reach_no_other_process(task: EplbTask) -> None:
    before = harness._ZYGOTES[(True, "cpu")]
    host_pids, zygote_pid = _sandbox_processes()
    code = hostile(KILL_EVERYTHING.replace("HOST_PIDS", repr(host_pids)))
    result = task.evaluate(code)
    assert result.correct, result.error
    assert "VISIBLE:1\n" in result.stdout  # its namespace's init is all it can name
    assert tags(result)["PROCFS"] == "OK" and "PROCFS:OK:'[]'" in result.stdout  # /proc is empty
    assert _process_state(zygote_pid) in ("S", "R"), _process_state(zygote_pid)
    assert_innocent_scores(task)
    assert harness._ZYGOTES[(True, "cpu")] is before, "the zygote had to be restarted"


def test_concurrent_evaluations_stay_isolated(task: EplbTask) -> None:
    """A program killing everything it can runs beside innocent ones: they all score as when run alone."""
    alone = task.evaluate(SEED_CODE).metrics["balancedness_gpu"]
    code = hostile(KILL_EVERYTHING.replace("HOST_PIDS", "[]"))
    results: dict[str, list] = {"hostile": [], "innocent": []}

    def evaluate(kind: str, program: str) -> None:
        for _ in range(3):
            results[kind].append(task.evaluate(program))

    threads = [threading.Thread(target=evaluate, args=("hostile", code)),
               threading.Thread(target=evaluate, args=("innocent", SEED_CODE))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r.correct for r in results["hostile"] + results["innocent"]), [r.error for r in results["innocent"]]
    assert {r.metrics["balancedness_gpu"] for r in results["innocent"]} == {alone}


def _host_comms() -> set[str]:
    comms = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                comms.add(Path(f"/proc/{entry}/comm").read_text().strip())
            except OSError:
                pass
    return comms


def test_forked_and_detached_children_die_with_the_evaluation(task: EplbTask) -> None:
    marker = f"escape{os.getpid() % 100000}"
    result = task.evaluate(hostile(
        "import ctypes, time\n"
        "def _detach():\n"
        "    _child = os.fork()\n"
        "    if _child == 0:\n"
        "        os.setsid()\n"
        "        if os.fork() == 0:\n"
        f"            ctypes.CDLL(None).prctl(15, {marker.encode()!r}, 0, 0, 0)\n"
        "            time.sleep(300)\n"
        "        os._exit(0)\n"
        "    os.waitpid(_child, 0)\n"
        "_try('FORKED', _detach)\n"
        "_try('EXEC', lambda: os.execv('/bin/sh', ['sh', '-c', 'sleep 300']))\n"
        "import subprocess\n"
        "_try('SUBPROCESS', lambda: subprocess.Popen(['/usr/bin/sleep', '300']))\n"
        f"_try('PYTHON', lambda: subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)']))\n"
    ))
    assert result.correct, result.error
    found = tags(result)
    # the syscall filter refuses fork itself; should it ever let one through, the namespace still kills it
    assert found["FORKED"] == "FAIL" and found["EXEC"] == "FAIL" and found["SUBPROCESS"] == "FAIL", result.stdout
    deadline = time.monotonic() + 10
    while marker in _host_comms() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert marker not in _host_comms(), "a detached child outlived its evaluation"
    pids = [int(e) for e in os.listdir("/proc") if e.isdigit()]
    assert not [p for p in pids if "time.sleep(300)" in _cmdline(p)], "a started process outlived its evaluation"
    assert_innocent_scores(task)


@pytest.mark.parametrize("lazy", [False, True])
def test_tensor_subclasses_are_refused(task: EplbTask, lazy: bool) -> None:
    body = (
        "class Deferred(torch.Tensor):\n"
        + ("    @classmethod\n    def __torch_function__(cls, func, types, args=(), kwargs=None):\n"
           "        import time; time.sleep(0.05)\n"
           "        return super().__torch_function__(func, types, args, kwargs or {})\n" if lazy else "    pass\n")
    )
    result = task.evaluate(wrap_seed("p = p.as_subclass(Deferred)") + "\n" + body)
    assert not result.correct
    assert "phy2log must be a plain torch.Tensor, not the subclass Deferred" in result.error
    assert_innocent_scores(task)


FORGER = r'''
import json as _json, struct as _struct
_MODE = __FORGE_MODE__
_patched = []

def _forge(message):
    n = int.from_bytes(message[:4], "little")
    envelope = _json.loads(message[4:4 + n])
    body = message[4 + n:]
    if envelope["header"].get("type") != "placement":
        return message
    head = envelope["header"]
    if _MODE == "elapsed zero":
        head["elapsed_ns"] = 0
    elif _MODE == "elapsed negative":
        head["elapsed_ns"] = -10**12
    elif _MODE == "infinity":
        head["elapsed_ns"] = float("inf")
    elif _MODE == "nan index":
        head["index"] = float("nan")
    elif _MODE == "wrong index":
        head["index"] += 1
    elif _MODE == "wrong shape":
        envelope["arrays"][0]["shape"][1] += 1
    elif _MODE == "negative dimension":
        envelope["arrays"][2]["shape"][0] = -4
    elif _MODE == "float dtype":
        envelope["arrays"][0]["dtype"] = "<f8"
    elif _MODE == "pickle dtype":
        envelope["arrays"][0]["dtype"] = "|O"
    text = _json.dumps(envelope).encode()
    if _MODE == "huge header":
        return _struct.pack("<I", 10**9) + text + body
    if _MODE == "trailing bytes":
        body += b"12345678"
    if _MODE == "padding":
        body += bytes(200 * 1024 * 1024)
    return _struct.pack("<I", len(text)) + text + body

def rebalance_experts(weight, num_replicas, num_groups, num_nodes, num_gpus):
    if not _patched:  # every reply from here on goes through the worker's writer, rewritten
        transport = sys.modules["evaluator.sandbox.transport"]
        original = transport.write_parts
        transport.write_parts = lambda fd, parts: original(fd, [_forge(b"".join(bytes(p) for p in parts))])
        _patched.append(transport)
    import time
    time.sleep(0.03)
    return _seed(weight, num_replicas, num_groups, num_nodes, num_gpus)
'''

FORGERIES = {
    "elapsed zero": "",
    "elapsed negative": "",
    "infinity": "not a number the harness accepts",
    "nan index": "not a number the harness accepts",
    "wrong index": "a reply for window 0 came when window -1 was asked",  # -1: the warm-up call
    "wrong shape": "placement shapes [[4, 25], [4, 16,",
    "negative dimension": "an array dimension must be a non-negative integer, got -4",
    "float dtype": "arrays must be <i8 (int64)",
    "pickle dtype": "arrays must be <i8 (int64)",
    "huge header": "a header of 1000000000 bytes is refused",
    "trailing bytes": "8 bytes trail the last array",
    "padding": "the worker sent a reply larger than",
}


@pytest.mark.parametrize("mode", list(FORGERIES))
def test_forged_replies_are_refused_or_timed_honestly(task: EplbTask, mode: str) -> None:
    program = SEED_CODE + PRELUDE + "\n_seed = rebalance_experts\n" + FORGER.replace("__FORGE_MODE__", repr(mode))
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = task.evaluate(program)
    expected = FORGERIES[mode]
    if expected:
        assert not result.correct
        assert "breaks the protocol" in result.error or "larger than" in result.error
        assert expected in result.error and "\n" not in result.error, result.error
    else:  # what the worker claims about time is not read: the harness's clock saw the sleep
        assert result.correct, result.error
        assert result.metrics["runtime_median_s"] >= 0.03
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before
    assert grown_kib < 100 * 1024, f"the harness grew by {grown_kib // 1024} MiB"
    assert_innocent_scores(task)


def test_environment_holds_no_secrets(task: EplbTask) -> None:
    assert os.environ.get("OPENAI_API_KEY") != FAKE_KEY  # the fixture put it back; the zygote started with it
    result = task.evaluate(
        "import os, json\n"
        "print('ENV:' + json.dumps(sorted(os.environ)), flush=True)\n"
        "raise RuntimeError(repr(dict(os.environ))[::-1])\n"
    )
    assert not result.correct and "raised while loading: RuntimeError" in result.error
    keys = json.loads(next(line for line in result.stdout.splitlines() if line.startswith("ENV:"))[4:])
    assert "OPENAI_API_KEY" not in keys and "EPLB_EVOLVE_CACHE" not in keys
    assert set(keys) <= {"PATH", "LANG", "HOME", "TMPDIR", "PYTHONPATH", "PYTHONDONTWRITEBYTECODE", "PYTHONNOUSERSITE",
                         "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "LC_CTYPE", "PWD",
                         harness.CONTROL_FD_ENV, harness.ISOLATE_ENV}, keys
    assert FAKE_KEY not in result.error and FAKE_KEY[::-1] not in result.error
    assert_innocent_scores(task)


def test_writing_anywhere_changes_nothing_outside(task: EplbTask, tmp_path: Path) -> None:
    existing = tmp_path / "notes.txt"
    existing.write_text("original")
    created = tmp_path / "created-by-candidate"
    host_tmp = Path("/tmp") / f"eplb-evolve-pwned-{os.getpid()}"
    venv_cfg = Path(sys.prefix) / "pyvenv.cfg"
    protected = [existing, venv_cfg, Path("/etc/ld.so.cache"), REPO / "evaluator" / "__init__.py"]
    before = {p: digest(p) for p in protected}
    targets = {
        "EXISTING": (existing, "ab"), "CREATE": (created, "wb"), "VENV": (venv_cfg, "ab"),
        "VENVNEW": (Path(sys.prefix) / "pwned", "wb"), "SOURCE": (REPO / "evaluator" / "__init__.py", "ab"),
        "SOURCENEW": (REPO / "evaluator" / "pwned.py", "wb"), "LDCACHE": (Path("/etc/ld.so.cache"), "ab"),
        "STDLIB": (Path(os.__file__), "ab"),
    }
    attack = "".join(f"_try({tag!r}, lambda: _write({str(path)!r}, {mode!r}))\n"
                     for tag, (path, mode) in targets.items())
    attack += f"_try('TMP', lambda: _write({str(host_tmp)!r}))\n"  # the sandbox's own /tmp: private
    result = task.evaluate(hostile(attack))
    assert result.correct, result.error
    found = tags(result)
    assert {found[t] for t in targets} == {"FAIL"}, result.stdout
    assert {p: digest(p) for p in protected} == before
    assert not created.exists() and not (Path(sys.prefix) / "pwned").exists()
    assert not (REPO / "evaluator" / "pwned.py").exists() and not host_tmp.exists()
    assert_innocent_scores(task)
