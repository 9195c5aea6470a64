"""The Python API: the example in docs/api.md runs as written, and misuse ends in one clear UserError."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from evolve import load_config, open_archive, resume_campaign, run_campaign
from evolve.errors import UserError
from tests.toy_task import toy_config

ROOT = Path(__file__).resolve().parents[1]


def example_block() -> str:
    """The one python block under '## Example' in docs/api.md."""
    text = (ROOT / "docs" / "api.md").read_text()
    section = text.split("\n## Example\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "docs/api.md's example section should hold exactly one python block"
    return blocks[0]


def test_the_documented_example_runs_as_written(tmp_path):
    code = example_block()
    assert 'out="results/api-demo"' in code
    code = code.replace('out="results/api-demo"', f'out={str(tmp_path / "api-demo")!r}')
    checks = """
assert result.correct and 0 < result.scores["native"] <= 1
assert summary.evaluations == 20 and summary.best_score >= summary.seed_score
assert summary.holdout.startswith("holdout: best")
assert len(run.programs) >= 2 and run.programs["balancedness_gpu"].notna().any()
assert run.chain(summary.best_id)["patch_name"].iloc[0] in ("", "seed")
assert pair is not None and pair.windows == 3
print("EXAMPLE-OK")
"""
    proc = subprocess.run([sys.executable, "-c", code + checks], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0 and "EXAMPLE-OK" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-4000:]


def test_run_resume_and_open_a_toy_campaign(tmp_path):
    config = toy_config(tmp_path, max_evaluations=12)
    summary = run_campaign(config, holdout=False)
    assert summary.evaluations == 12
    frames = open_archive(summary.run_dir)
    assert (frames.steps["kind"] == "evaluated").sum() == 12
    assert set(frames.programs["id"]) >= {summary.best_id, summary.seed_id}
    assert "size" in frames.programs.columns and "score_score" in frames.programs.columns
    best_row = frames.programs.set_index("id").loc[summary.best_id]
    assert best_row["score"] == pytest.approx(summary.best_score)
    assert "def solve" in frames.code(summary.best_id[:10])
    assert list(frames.chain(summary.best_id)["id"])[-1] == summary.best_id
    with pytest.raises(UserError, match="already holds a run"):
        run_campaign(config, holdout=False)
    with pytest.raises(UserError, match="campaign.islands"):
        resume_campaign(summary.run_dir, {"campaign.islands": 5})
    resumed = resume_campaign(summary.run_dir, {"campaign.max_evaluations": 20}, holdout=False)
    assert resumed.evaluations == 20
    assert (open_archive(summary.run_dir).steps["kind"] == "evaluated").sum() == 20


def test_misuse_is_one_user_error(tmp_path):
    with pytest.raises(UserError, match="campaign.islandz"):
        load_config(overrides={"campaign.islandz": 3})
    with pytest.raises(UserError, match="no archive at"):
        open_archive(tmp_path / "nothing-here")
    frames_dir = tmp_path / "empty"
    frames_dir.mkdir()
    with pytest.raises(UserError):
        resume_campaign(frames_dir)


def test_evaluate_program_reports_a_bad_program_without_raising(small_trace, tmp_path):
    from evaluator import evaluate_program
    from evaluator.traces import save_npz

    path = save_npz(small_trace, tmp_path / "small.npz")
    result = evaluate_program("def rebalance_experts(*args):\n    return None\n", dataset=str(path),
                              num_replicas=32, num_gpus=8, num_nodes=2, window=50)
    assert not result.correct and result.error and "\n" not in result.error
    with pytest.raises(UserError, match="no candidate 'no_such_balancer'"):
        evaluate_program("no_such_balancer")
