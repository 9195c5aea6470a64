"""The Ray backend on a local Ray instance: same archive as local, worker loss re-queued once, clear errors.

Ray starts once for the module (loopback only, 2 CPUs) and stops after it. The slow toy task below lets a
test kill an actor while an evaluation is really running: it drops a marker file when it starts.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray")

from evolve import campaign_cli  # noqa: E402
from evolve.backends import BackendContext, make_backend  # noqa: E402
from evolve.errors import UserError  # noqa: E402
from evolve.ray_backend import RayBackend, actor_resources  # noqa: E402
from evolve.task import Result  # noqa: E402
from tests.evaluator_helpers import SEED_CODE, SMALL, skewed_trace, wrap_seed  # noqa: E402
from tests.toy_task import SEED, ToyTask, fingerprint, toy_config  # noqa: E402

pytestmark = pytest.mark.ray
ROOT = Path(__file__).resolve().parents[1]
HANG_GUARD_S = 60  # only against a hung test, never a timing assertion


class SlowToyTask(ToyTask):
    """The toy task with a fixed pause per evaluation and a marker file written when one starts."""

    def __init__(self, options: dict[str, Any]) -> None:
        options = dict(options)
        self.pause = float(options.pop("pause", 0.0))
        self.marker = options.pop("marker", "")
        super().__init__(options)

    def evaluate(self, program_text: str) -> Result:
        if self.marker:
            Path(self.marker, uuid.uuid4().hex).touch()
        time.sleep(self.pause)
        return super().evaluate(program_text)


def make_slow_task(options: dict[str, Any]) -> SlowToyTask:
    return SlowToyTask(options)


SLOW_FACTORY = f"{Path(__file__).resolve()}:make_slow_task"


@pytest.fixture(scope="module", autouse=True)
def ray_instance():
    ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
             log_to_driver=False, logging_level="warning")
    yield
    ray.shutdown()


def slow_config(tmp: Path, name: str, marker: Path, **campaign: Any):
    config = toy_config(tmp, name, **campaign)
    config.task.factory = SLOW_FACTORY
    config.task.options.update({"pause": 0.3, "marker": str(marker)})
    return config


def run(config) -> Any:
    return campaign_cli.run_campaign(config, Path(config.campaign.out), False, holdout=False)


def wait_for(condition, what: str) -> None:
    give_up = time.monotonic() + HANG_GUARD_S
    while not condition():
        assert time.monotonic() < give_up, f"gave up waiting for {what}"
        time.sleep(0.01)


def started(marker: Path) -> int:
    return len(list(marker.iterdir()))


def test_seeded_campaign_gives_the_same_archive_on_ray_and_local(tmp_path: Path):
    prints = {}
    for backend in ("local", "ray"):
        config = toy_config(tmp_path, backend, workers=2, max_evaluations=24, backend=backend)
        config.task.options["delay"] = 0.02  # random sleeps: evaluations finish out of order
        summary = run(config)
        assert summary.evaluations == 24
        prints[backend] = fingerprint(Path(config.campaign.out) / "archive.sqlite")
    assert prints["ray"] == prints["local"]
    assert len(prints["ray"]["versions"]) > 1


def test_actor_killed_mid_evaluation_loses_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    backends: list[RayBackend] = []

    def recording(name: str, context: BackendContext):
        backends.append(make_backend(name, context))
        return backends[-1]

    monkeypatch.setattr(campaign_cli, "make_backend", recording)
    marker = tmp_path / "started"
    marker.mkdir()
    config = slow_config(tmp_path, "killed", marker, workers=2, max_evaluations=8, backend="ray")
    outcome: dict[str, Any] = {}
    runner = threading.Thread(target=lambda: outcome.setdefault("summary", run(config)), daemon=True)
    runner.start()
    try:
        wait_for(lambda: started(marker) >= 3 and backends and backends[0].busy_actors(), "a running evaluation")
        ray.kill(backends[0].busy_actors()[0])
    finally:
        runner.join(timeout=HANG_GUARD_S)
    assert not runner.is_alive() and outcome["summary"].evaluations == 8
    assert backends[0].losses == 1

    reference = toy_config(tmp_path, "local", workers=2, max_evaluations=8)  # the same search, nothing killed
    run(reference)
    killed = fingerprint(Path(config.campaign.out) / "archive.sqlite")
    assert killed == fingerprint(Path(reference.campaign.out) / "archive.sqlite")  # every result, same archive


def test_an_evaluation_lost_twice_is_a_failure_and_work_goes_on(tmp_path: Path):
    marker = tmp_path / "started"
    marker.mkdir()
    task = SlowToyTask({})
    backend = RayBackend(BackendContext(task, 1, SLOW_FACTORY, {"pause": 1.0, "marker": str(marker)}))
    try:
        future = backend.submit(SEED)
        for kills in (1, 2):  # the first loss re-queues the evaluation on a fresh actor, the second ends it
            wait_for(lambda kills=kills: started(marker) >= kills and backend.busy_actors(),
                     f"evaluation attempt {kills}")
            ray.kill(backend.busy_actors()[0])
        result = future.result(timeout=HANG_GUARD_S)
        assert not result.correct and "lost 2 times" in result.error and "\n" not in result.error
        assert result.evaluator_version == task.stamp()["evaluator_version"]
        assert backend.submit(SEED).result(timeout=HANG_GUARD_S).correct  # a replacement actor carries on
    finally:
        backend.close()


def test_eplb_evaluation_on_ray_matches_local_and_keeps_the_sandbox(tmp_path: Path):
    from evaluator.task import make_task
    from evaluator.traces import save_npz

    path = save_npz(skewed_trace(steps=300), tmp_path / "tiny.npz")
    options = dict(SMALL, dataset=str(path), timeout_s=20.0, reference_calls=1)
    task = make_task(options)
    backend = RayBackend(BackendContext(task, 1, "evaluator.task:make_task", options))
    try:
        snooping = wrap_seed("open('/etc/hostname').read()")
        on_ray = [backend.submit(code) for code in (SEED_CODE, snooping)]
        seed, snoop = (f.result(timeout=HANG_GUARD_S) for f in on_ray)
    finally:
        backend.close()
    local = task.evaluate(SEED_CODE)
    assert seed.correct and seed.dataset == local.dataset and seed.scorer == local.scorer
    placement = ("balancedness_gpu", "balancedness_expert", "balancedness_node", "speedup")  # not timings
    assert {k: seed.metrics[k] for k in placement} == {k: local.metrics[k] for k in placement}
    assert seed.scores[seed.scorer] == local.scores[local.scorer]
    assert not snoop.correct and "not allowed" in snoop.error


def test_a_task_that_cannot_be_built_on_a_worker_is_one_clear_line():
    with pytest.raises(UserError, match="a Ray worker could not build the task: task option 'split'"):
        RayBackend(BackendContext(ToyTask({}), 1, SLOW_FACTORY, {"split": "nowhere"}))


def test_gpu_tasks_ask_ray_for_a_gpu():
    assert actor_resources({"device": "cuda"}) == {"num_cpus": 1, "num_gpus": 1}
    assert actor_resources({"device": "cuda:1"})["num_gpus"] == 1
    assert actor_resources({}) == {"num_cpus": 1, "num_gpus": 0}


def test_unreachable_cluster_is_one_clear_line(tmp_path: Path):
    config = toy_config(tmp_path, "nowhere")
    config_file = tmp_path / "campaign.toml"
    config_file.write_text(config.to_toml())
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run([sys.executable, "-m", "evolve.cli", "run", "--config", str(config_file), "--backend", "ray",
                           "--ray-address", "127.0.0.1:1"], cwd=ROOT, capture_output=True, text=True, env=env,
                          timeout=HANG_GUARD_S)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot reach the Ray cluster at 127.0.0.1:1" in lines[0], proc.stderr


def test_ray_address_without_the_ray_backend_is_refused(tmp_path: Path):
    config = toy_config(tmp_path)
    config.campaign.ray_address = "auto"
    with pytest.raises(UserError, match="--backend ray"):
        config.check()


def test_missing_ray_is_one_clear_line(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    monkeypatch.delitem(sys.modules, "evolve.ray_backend")
    with pytest.raises(UserError, match=r"install the extra \(pip install -e '\.\[ray\]'\)"):
        make_backend("ray", BackendContext(ToyTask({}), 1, "tests/toy_task.py:make_task"))
