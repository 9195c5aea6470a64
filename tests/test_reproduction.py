"""Reproducing a published evaluator: the documented commands, checked against an independent re-implementation.

The commands of docs/reproduction.md's step-by-step section are read from the page and run verbatim on an
ADRS-schema file that `traces export` wrote (58 layers x 256 experts, 550 steps: five whole windows and a
trailing one of 50 steps). The balance numbers they print must agree, per window and overall, to 1e-6
with `tests/published_reference.py`, a loop-based re-implementation of the published simulation and
scoring, for DeepSeek's algorithm (candidates/seed.py, which reproduces the DeepSeek README example) and
for another candidate (candidates/greedy_snake.py, a global policy).
"""
from __future__ import annotations

import importlib.util
import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest

from evaluator.traces import Trace, save_npz
from evolve.cli import main as cli_main
from tests import published_reference as published
from tests.evaluator_helpers import REPO

DOC = REPO / "docs" / "reproduction.md"
STEPS_HEADING = "## Reproduce a published score, step by step"
STEPS, LAYERS, EXPERTS = 550, 58, 256
TOLERANCE = 1e-6
OTHER_CANDIDATE = "candidates/greedy_snake.py"


def documented_commands() -> list[str]:
    """The `eplb-evolve` lines of the first ```sh block after the step-by-step heading, in order."""
    text = DOC.read_text()
    assert STEPS_HEADING in text, f"{DOC} lost its '{STEPS_HEADING}' section"
    block = re.search(r"```sh\n(.*?)```", text.split(STEPS_HEADING, 1)[1], re.S)
    assert block, f"no ```sh block under '{STEPS_HEADING}'"
    commands = [line.strip() for line in block.group(1).splitlines() if line.strip().startswith("eplb-evolve ")]
    assert commands, "the step-by-step block holds no eplb-evolve command"
    return commands


def drifting_trace(seed: int = 7) -> Trace:
    """A DeepSeek-V3-shaped trace whose hot experts drift, so planning on the previous window costs something."""
    rng = np.random.default_rng(seed)
    popularity = rng.gamma(0.6, 1.0, size=(LAYERS, EXPERTS)) + 0.05
    drift = np.exp(np.cumsum(rng.normal(0.0, 0.02, size=(STEPS, 1, EXPERTS)), axis=0))
    return Trace(rng.poisson(popularity[None] * drift * 16), {"name": "drifting"})


def load_program(path: str):
    spec = importlib.util.spec_from_file_location(Path(path).stem, REPO / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(command: str, capsys: pytest.CaptureFixture[str]) -> str:
    argv = shlex.split(command)
    assert argv[0] == "eplb-evolve"
    code = cli_main(argv[1:])
    out = capsys.readouterr()
    assert code == 0, f"`{command}` exited {code}: {out.err.strip()}"
    return out.out


@pytest.fixture
def workdir(tmp_path: Path, user_cache: Path, monkeypatch: pytest.MonkeyPatch,
            capsys: pytest.CaptureFixture[str]) -> Path:
    """A folder holding expert-load.json (exported by `traces export`) and the candidates, as a user has."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "candidates").symlink_to(REPO / "candidates")
    save_npz(drifting_trace(), tmp_path / "drifting.npz")
    run("eplb-evolve traces export drifting.npz expert-load.json --format adrs-json", capsys)
    return tmp_path


def test_documented_reproduction_matches_the_published_definitions(
        workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    commands = documented_commands()
    evaluations = [c for c in commands if shlex.split(c)[1] == "evaluate"]
    assert len(evaluations) == 1 and "candidates/seed.py" in evaluations[0] and "--json" in evaluations[0]
    outputs = {c: run(c, capsys) for c in commands}
    result = json.loads(outputs[evaluations[0]])
    other = json.loads(run(evaluations[0].replace("candidates/seed.py", OTHER_CANDIDATE), capsys))

    windows = published.load_windows(workdir / "expert-load.json")
    assert len(windows) == 6  # five whole windows and a trailing one of 50 steps
    settings = result["settings"]
    assert (settings["layers"], settings["experts"], settings["num_groups"]) == (58, 256, 8)
    assert ((settings["window"], settings["protocol"], settings["partial_window"], settings["split"])
            == (100, "predictive", "score", "all"))
    assert (settings["num_replicas"], settings["num_nodes"], settings["num_gpus"]) == (288, 4, 32)
    assert settings["trailing_partial_steps"] == 50 and settings["scored_windows"] == 5

    for name, evaluated in (("candidates/seed.py", result), (OTHER_CANDIDATE, other)):
        assert evaluated["correct"], evaluated["error"]
        reference = published.evaluate(load_program(name).rebalance_experts, windows)
        for metric in ("balancedness_expert", "balancedness_gpu"):
            ours = [w[metric] for w in evaluated["per_window"]]
            assert len(ours) == len(reference[metric]) == 5
            assert np.allclose(ours, reference[metric], rtol=0, atol=TOLERANCE), (name, metric, ours, reference[metric])
            overall = sum(reference[metric]) / len(reference[metric])
            assert abs(evaluated["metrics"][metric] - overall) <= TOLERANCE, (name, metric)
        # the published OpenEvolve score's balance term is this slot balancedness; its speed term is ours
        speed = 0.02 / evaluated["metrics"]["runtime_mean_s"]
        expected = (evaluated["metrics"]["balancedness_expert"] + speed) / 2
        assert evaluated["scores"]["adrs-openevolve"] == pytest.approx(expected)
    assert result["per_window"][-1]["window"] == 5.0  # the trailing partial window is the last one scored


def test_trailing_window_can_be_dropped_and_groups_matter(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run("eplb-evolve traces import expert-load.json --format adrs-json --name real", capsys)
    base = "eplb-evolve evaluate candidates/seed.py --dataset real --preset adrs --json"
    scored = json.loads(run(base, capsys))
    dropped = json.loads(run(base + " --partial-window drop", capsys))
    one_group = json.loads(run(base + " --groups 1", capsys))
    windows = published.load_windows(workdir / "expert-load.json")
    seed = load_program("candidates/seed.py").rebalance_experts
    reference_dropped = published.evaluate(seed, windows[:-1])
    reference_one_group = published.evaluate(seed, windows, num_groups=1)
    assert dropped["settings"]["scored_windows"] == 4 and dropped["settings"]["overrides"] == ["partial_window"]
    assert abs(dropped["metrics"]["balancedness_gpu"] - np.mean(reference_dropped["balancedness_gpu"])) <= TOLERANCE
    assert dropped["metrics"]["balancedness_expert"] != pytest.approx(scored["metrics"]["balancedness_expert"],
                                                                      abs=1e-4)
    assert one_group["settings"]["groups_from"] == "--groups" and one_group["settings"]["num_groups"] == 1
    assert abs(one_group["metrics"]["balancedness_gpu"] - np.mean(reference_one_group["balancedness_gpu"])) <= TOLERANCE
    assert one_group["metrics"]["balancedness_gpu"] != pytest.approx(scored["metrics"]["balancedness_gpu"], abs=1e-3)
