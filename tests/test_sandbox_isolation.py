"""Where isolation is missing the sandbox refuses to start; the explicit opt-out stamps its results;
a stopped or killed zygote or standby worker is replaced and the hit evaluation retried."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evaluator.results.leaderboard import result_row
from evaluator.sandbox import bwrap, harness
from evaluator.task import EplbTask, EvalOptions, make_task
from evaluator.traces import registry, save_npz
from evolve.errors import UserError
from tests.evaluator_helpers import REPO, SEED_CODE, SMALL, skewed_trace, small_task, wrap_seed


@pytest.fixture
def no_bwrap_on_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no bwrap to find
    bwrap.probe.cache_clear()
    yield
    bwrap.probe.cache_clear()


def test_missing_bubblewrap_refuses_to_start_with_one_line(no_bwrap_on_path, tmp_path: Path) -> None:
    with pytest.raises(UserError) as caught:
        small_task(tmp_path)
    message = str(caught.value)
    assert "\n" not in message
    assert "bubblewrap (bwrap) is not installed" in message
    assert "apt-get install bubblewrap" in message and "--unsafe-no-isolation" in message


def test_refused_namespaces_refuse_to_start(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(bwrap, "probe", lambda: "bwrap failed: No permissions to create new namespace")
    with pytest.raises(UserError,
                       match="No permissions to create new namespace; install bubblewrap .*unprivileged_userns_clone"):
        small_task(tmp_path)


def test_the_probe_runs_the_real_sandbox_here() -> None:
    bwrap.probe.cache_clear()
    assert bwrap.probe() == ""


def test_opt_out_runs_without_bubblewrap_and_stamps_every_result(no_bwrap_on_path, tmp_path: Path) -> None:
    task = small_task(tmp_path, unsafe_no_isolation=True)
    good = task.evaluate(SEED_CODE)
    bad = task.evaluate(wrap_seed("p = p[:, :-1]"))
    assert good.correct and good.metrics["unisolated"] == 1.0
    assert not bad.correct
    for result in (good, bad):
        assert result.evaluator_version.endswith("+unisolated")
    assert result_row("seed", "candidate", good, task)["evaluator"].endswith("+unisolated")


def test_isolated_results_carry_no_unisolated_stamp(tmp_path: Path) -> None:
    task = small_task(tmp_path)
    result = task.evaluate(SEED_CODE)
    assert result.correct and "unisolated" not in result.metrics
    assert "+unisolated" not in result.evaluator_version


def test_opt_out_as_a_task_option() -> None:
    assert EvalOptions.from_dict({"unsafe_no_isolation": True}).unsafe_no_isolation
    with pytest.raises(UserError, match="'unsafe_no_isolation' must be true or false, got 'yes'"):
        make_task({"unsafe_no_isolation": "yes"})


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "evolve.cli", *args], cwd=REPO, capture_output=True, text=True,
                          env=env, timeout=300)


def test_evaluate_cli_refuses_or_opts_out(tmp_path: Path) -> None:
    trace = save_npz(skewed_trace(), tmp_path / "small.npz")
    program = tmp_path / "seed.py"
    program.write_text(SEED_CODE)
    shape = ["--replicas", str(SMALL["num_replicas"]), "--groups", str(SMALL["num_groups"]),
             "--nodes", str(SMALL["num_nodes"]), "--gpus", str(SMALL["num_gpus"])]
    base = ["evaluate", str(program), "--dataset", str(trace), *shape]
    env = dict(os.environ, PATH=str(tmp_path))  # no bwrap
    refused = _cli(base, env)
    assert refused.returncode != 0
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot isolate candidate programs" in lines[0], refused.stderr
    opted = _cli([*base, "--unsafe-no-isolation", "--json"], env)
    assert opted.returncode == 0, opted.stderr
    out = json.loads(opted.stdout)
    assert out["metrics"]["unisolated"] == 1.0 and out["evaluator_version"].endswith("+unisolated")


def test_the_sandbox_sees_nothing_of_the_project_but_its_evaluator() -> None:
    binds = bwrap.read_only_binds()
    private = [REPO, REPO / ".cache", REPO / "results", registry.cache_dir(), Path.home(), Path("/tmp")]
    for bind in map(Path, binds):
        for place in private:
            assert not (place == bind or place.is_relative_to(bind)), f"{bind} exposes {place}"
    assert str(REPO / "evaluator") in binds
    argv = bwrap.command(["python"])
    for flag in ("--unshare-all", "--die-with-parent", "--new-session", "--clearenv", "--cap-drop"):
        assert flag in argv
    assert argv[argv.index("--uid") + 1] == "65534"
    # /tmp is mounted before the binds, so a checkout or venv under /tmp is bound on top of it, not hidden
    binds_at = [i for i, arg in enumerate(argv) if arg == "--ro-bind"]
    assert binds_at and argv.index("--tmpfs") < min(binds_at) and argv[argv.index("--tmpfs") + 1] == "/tmp"


# --- the machinery: what the harness does when its own processes fail ---------------------------------


@pytest.fixture(scope="module")
def task(tmp_path_factory: pytest.TempPathFactory) -> EplbTask:
    return small_task(tmp_path_factory.mktemp("recovery"))


def _start_time(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])


def _zygote_and_standby() -> tuple[int, int]:
    """Host pids of the isolated zygote and of its standby worker's outer process (the newest child of
    the zygote with its init and candidate process running: an earlier worker may still be dying)."""
    from tests.test_bad_programs import _descendants, _running
    from tests.test_sandbox_attacks import _ppid, _sandbox_processes

    _, zygote = _sandbox_processes()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            newest = max((p for p in _descendants(zygote) if _ppid(p) == zygote), key=lambda p: (_start_time(p), p))
            if _running(newest) and len([d for d in _descendants(newest) if _running(d)]) == 2:
                return zygote, newest
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    raise AssertionError("no standby worker found")


@pytest.mark.parametrize("hit",
                         ["stop the zygote", "kill the zygote", "kill the standby worker", "stop the standby worker"])
def test_a_broken_zygote_or_standby_is_replaced_and_the_evaluation_retried(
    task: EplbTask, monkeypatch: pytest.MonkeyPatch, hit: str
) -> None:
    monkeypatch.setattr(harness, "ANSWER_TIMEOUT_S", 2.0)
    assert task.evaluate(SEED_CODE).correct
    before = harness._ZYGOTES[(True, "cpu")]
    zygote, standby = _zygote_and_standby()
    from tests.test_bad_programs import _descendants

    # the standby's outer process only waits: to stop the standby is to stop all three of its processes
    victims = [zygote] if "zygote" in hit else [standby, *(_descendants(standby) if hit.startswith("stop") else ())]
    doomed = [*victims, *(_descendants(standby) if "standby" in hit else ())]
    for victim in victims:
        os.kill(victim, signal.SIGSTOP if hit.startswith("stop") else signal.SIGKILL)
    if hit.startswith("kill"):  # SIGKILL lands asynchronously: let the standby's processes really be gone
        from tests.test_bad_programs import _running

        deadline = time.monotonic() + 10
        while any(_running(p) for p in doomed) and time.monotonic() < deadline:
            time.sleep(0.01)
    result = task.evaluate(SEED_CODE)
    assert result.correct, result.error
    assert harness._ZYGOTES[(True, "cpu")] is not before


def test_a_sandbox_failing_twice_is_a_harness_error_not_the_programs(
        task: EplbTask, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self):
        raise harness._MachineryFailure("the sandbox's zygote did not answer within 2 s")

    monkeypatch.setattr(harness._Zygote, "fork", broken)
    with pytest.raises(harness.SandboxError) as caught:
        task.evaluate(SEED_CODE)
    assert "\n" not in str(caught.value) and "not the program's fault" in str(caught.value)
    monkeypatch.undo()
    assert task.evaluate(SEED_CODE).correct


def test_a_large_program_sent_to_a_stopped_standby_cannot_hang_the_harness(
    task: EplbTask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job carries the program: one larger than the socket's buffer, sent to a stopped standby,
    used to block the harness forever instead of ending in a retry."""
    import threading

    from tests.test_bad_programs import _descendants

    monkeypatch.setattr(harness, "ANSWER_TIMEOUT_S", 2.0)
    assert task.evaluate(SEED_CODE).correct
    _, standby = _zygote_and_standby()
    for victim in [standby, *_descendants(standby)]:
        os.kill(victim, signal.SIGSTOP)
    program = SEED_CODE + "\n#" + "x" * (8 << 20) + "\n"  # 8 MB: far past any socket buffer
    results: list = []
    thread = threading.Thread(target=lambda: results.append(task.evaluate(program)), daemon=True)
    thread.start()
    thread.join(120)
    assert results, "the harness hung on a stopped standby"
    assert results[0].correct, results[0].error
