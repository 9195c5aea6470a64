"""The cheaper evaluation path keeps its promises: every candidate gets a worker that has never run code
of any program, asked for ahead of need; a used worker is gone before the next candidate starts; the
timer still covers each call's round trip; and the faster scoring code agrees with plain definitions."""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from evaluator.contract import validate_placement
from evaluator.migration import migration_cost
from evaluator.sandbox import harness
from evaluator.simulate import simulate
from evaluator.task import EplbTask
from tests.evaluator_helpers import SEED_CODE, small_task


@pytest.fixture(scope="module")
def task(tmp_path_factory: pytest.TempPathFactory) -> EplbTask:
    return small_task(tmp_path_factory.mktemp("standby"))


def _alive(pid: int) -> bool:
    """Running or sleeping (a zombie or a vanished pid is not alive)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _state(pid: int) -> str:
    """The process's state letter (R, S, T for stopped, Z...), or "gone"."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def _host_pid(sandbox_pid: int) -> int:
    """The host pid of a worker's outer process, known to the harness by its pid in bubblewrap's namespace."""
    from tests.test_bad_programs import _descendants

    for pid in _descendants(harness._ZYGOTES[(True, "cpu")].process.pid):
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("NSpid:") and line.split()[1:3] == [str(pid), str(sandbox_pid)]:
                    return pid
        except OSError:
            continue
    raise AssertionError(f"no process {sandbox_pid} in the sandbox")


def test_each_candidate_gets_a_fresh_worker_and_a_used_one_is_killed(
        task: EplbTask, monkeypatch: pytest.MonkeyPatch) -> None:
    assert task.evaluate(SEED_CODE).correct  # the zygote is up and has a worker waiting
    handed: list[tuple[int, bool]] = []  # (pid, whether it was asked for by an earlier evaluation)
    original = harness._Zygote.fork

    def recording(self):  # type: ignore[no-untyped-def]
        with self.changed:
            waiting = {self.handed[j][0] for j in self.prefetched if j in self.handed}
        pid, fd, pidfd = original(self)
        handed.append((_host_pid(pid), pid in waiting))
        return pid, fd, pidfd

    monkeypatch.setattr(harness._Zygote, "fork", recording)
    # A program that marks its interpreter: a reused process would show the mark to the next candidate.
    marker = SEED_CODE + "\nimport sys\nprint('SEEN' if hasattr(sys, '_eplb_mark') else 'FRESH', flush=True)\n" \
                         "sys._eplb_mark = 1\n"
    for _ in range(4):
        result = task.evaluate(marker)
        assert result.correct, result.error
        assert result.stdout.strip() == "FRESH", result.stdout
        used = handed[-1][0]
        deadline = time.monotonic() + 10  # the zygote stops it, then kills it, asynchronously
        while _state(used) not in ("T", "gone") and time.monotonic() < deadline:
            time.sleep(0.002)
        assert _state(used) in ("T", "gone"), "the worker that ran a candidate went on running after its evaluation"
        while _alive(used) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not _alive(used), "the worker that ran a candidate outlived its evaluation"
    pids = [pid for pid, _ in handed]
    assert len(set(pids)) == len(pids), f"a worker served two candidates: {pids}"
    assert all(ahead for _, ahead in handed), "a worker was forked on demand although one had been asked for"


def test_the_worker_waiting_for_the_next_candidate_has_run_no_program(task: EplbTask) -> None:
    """The waiting worker exists before the next program is known: nothing of a program reaches it."""
    assert task.evaluate(SEED_CODE + "\nimport sys\nsys._eplb_mark = 1\n").correct
    zygote = harness._ZYGOTES[(True, "cpu")]
    assert zygote.replenished(zygote.prefetched[-1], 10.0)
    with zygote.changed:
        held = [zygote.handed[j] for j in zygote.prefetched if j in zygote.handed]
    assert held, "no worker is waiting for the next candidate"
    for _pid, sock_fd, pidfd in held:  # nothing the harness starts inherits a waiting worker
        assert not os.get_inheritable(sock_fd) and not os.get_inheritable(pidfd)
    probe = SEED_CODE + "\nimport sys\nprint('SEEN' if hasattr(sys, '_eplb_mark') else 'FRESH', flush=True)\n"
    result = task.evaluate(probe)
    assert result.correct and result.stdout.strip() == "FRESH", result.stdout


def test_the_timer_covers_the_round_trip(task: EplbTask) -> None:
    """A balancer that sleeps 40 ms per call is measured at 40 ms or more: the clock runs around the call."""
    slow = SEED_CODE + ("\n_fast = rebalance_experts\n"
                        "def rebalance_experts(weight, *args):\n"
                        "    import time\n    time.sleep(0.04)\n    return _fast(weight, *args)\n")
    result = task.evaluate(slow)
    assert result.correct, result.error
    assert min(w["runtime_s"] for w in result.per_window) >= 0.04
    assert result.metrics["harness_overhead_s"] >= 0


# --- the scoring fast paths against plain definitions ---------------------------------------------------


def _plain_valid(phy2log: np.ndarray, log2phy: np.ndarray, logcnt: np.ndarray, experts: int, replicas: int) -> bool:
    """The contract, one layer and one expert at a time."""
    for layer in range(phy2log.shape[0]):
        if any(not 0 <= e < experts for e in phy2log[layer]):
            return False
        for expert in range(experts):
            count = int(logcnt[layer, expert])
            owned = sorted(s for s in range(replicas) if phy2log[layer, s] == expert)
            if count < 1 or len(owned) != count or log2phy.shape[2] < count:
                return False
            if sorted(int(v) for v in log2phy[layer, expert, :count]) != owned:
                return False
            if any(v != -1 for v in log2phy[layer, expert, count:]):
                return False
    return True


def _valid_placement(rng: np.random.Generator, layers: int, experts: int, replicas: int, width: int):
    phy2log = np.empty((layers, replicas), dtype=np.int64)
    log2phy = np.full((layers, experts, width), -1, dtype=np.int64)
    logcnt = np.zeros((layers, experts), dtype=np.int64)
    for layer in range(layers):
        extra = rng.choice(experts, size=replicas - experts, replace=True)
        owners = rng.permutation(np.concatenate([np.arange(experts), extra]))
        while np.bincount(owners, minlength=experts).max() > width:
            owners = rng.permutation(np.concatenate([np.arange(experts), np.arange(replicas - experts) % experts]))
        phy2log[layer] = owners
        for slot in rng.permutation(replicas):
            expert = owners[slot]
            log2phy[layer, expert, logcnt[layer, expert]] = slot
            logcnt[layer, expert] += 1
    return phy2log, log2phy, logcnt


def _corrupt(rng: np.random.Generator, placement, experts: int, replicas: int):
    phy2log, log2phy, logcnt = (a.copy() for a in placement)
    layer = int(rng.integers(phy2log.shape[0]))
    kind = int(rng.integers(8))
    expert = int(rng.integers(experts))
    if kind == 0:  # a slot given to another expert
        phy2log[layer, rng.integers(replicas)] = rng.integers(experts)
    elif kind == 1:  # a listed slot changed
        log2phy[layer, expert, rng.integers(logcnt[layer, expert])] = rng.integers(-2, replicas + 2)
    elif kind == 2:  # padding filled
        if log2phy.shape[2] > logcnt[layer, expert]:
            log2phy[layer, expert, -1] = rng.integers(replicas)
    elif kind == 3:  # two experts' lists swapped
        other = int(rng.integers(experts))
        log2phy[layer, [expert, other]] = log2phy[layer, [other, expert]]
    elif kind == 4:  # a slot listed twice
        if logcnt[layer, expert] > 1:
            log2phy[layer, expert, 1] = log2phy[layer, expert, 0]
    elif kind == 5:  # counts moved between experts
        other = int(rng.integers(experts))
        logcnt[layer, expert] += 1
        logcnt[layer, other] -= 1
    elif kind == 6:  # an expert id out of range
        phy2log[layer, rng.integers(replicas)] = rng.choice([-1, experts])
    # kind 7: left valid
    return phy2log, log2phy, logcnt


def test_the_contract_check_agrees_with_the_plain_definition() -> None:
    rng = np.random.default_rng(7)
    layers, experts, replicas = 3, 8, 12
    verdicts = {True: 0, False: 0}
    for _ in range(400):
        placement = _corrupt(rng, _valid_placement(rng, layers, experts, replicas, int(rng.integers(5, 7))),
                             experts, replicas)
        expected = _plain_valid(*placement, experts, replicas)
        problem = validate_placement(*placement, layers, experts, replicas)
        assert (problem == "") == expected, (problem, placement)
        verdicts[expected] += 1
    assert verdicts[True] > 20 and verdicts[False] > 100  # both sides were exercised


def test_migration_cost_matches_the_slot_by_slot_definition() -> None:
    rng = np.random.default_rng(3)
    windows, layers, gpus, per_gpu, experts = 4, 3, 4, 3, 8
    plans = rng.integers(0, experts, size=(windows, layers, gpus * per_gpu))
    plans[2] = plans[1]  # a window that moves nothing
    loads = torch.from_numpy(rng.integers(0, 100, size=(windows, layers, experts)))
    logcnt = torch.from_numpy(np.stack([[np.bincount(row, minlength=experts).clip(1) for row in w] for w in plans]))
    sim = simulate(loads, torch.from_numpy(plans), logcnt, gpus, 2)
    moves = migration_cost(plans, sim, gpus, 100)
    for w in range(1, windows):
        remote = 0
        for layer in range(layers):
            for slot in range(gpus * per_gpu):
                gpu = slot // per_gpu
                before = set(plans[w - 1, layer, gpu * per_gpu:(gpu + 1) * per_gpu].tolist())
                if plans[w, layer, slot] != plans[w - 1, layer, slot] and plans[w, layer, slot] not in before:
                    remote += 1
        assert moves.slots_remote[w] == remote
    assert moves.slots_remote[2] == 0 and moves.slots_changed[2] == 0
