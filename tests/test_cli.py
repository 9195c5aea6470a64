"""The command line as a user meets it: run from a directory that is not the install, stdout not a
terminal (a pipe), LLM endpoints on 127.0.0.1 that are wrong in the ways setups go wrong."""
from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from evaluator.traces import save_npz
from evolve.campaign_cli import check_cost_cap
from evolve.cli import build_parser
from evolve.cli import main as cli_main
from evolve.config import Config
from tests.evaluator_helpers import SMALL, skewed_trace
from tests.test_llm_proposer import KEY, KEY_ENV, ChatServer
from tests.toy_task import SEED

REPO = Path(__file__).resolve().parents[1]
TOY = REPO / "tests" / "toy_task.py"
CONFIGS = sorted((REPO / "configs").glob("*.toml"))
SMALL_FLAGS = ["--replicas", str(SMALL["num_replicas"]), "--groups", str(SMALL["num_groups"]),
               "--nodes", str(SMALL["num_nodes"]), "--gpus", str(SMALL["num_gpus"])]


def cli(args: list[str], cwd: Path, env: dict[str, str] | None = None, drop: tuple[str, ...] = (),
        timeout: float = 300) -> subprocess.CompletedProcess:
    """`eplb-evolve ARGS` in `cwd`, stdout and stderr pipes (no terminal), as a user's shell would run it."""
    environ = {k: v for k, v in os.environ.items() if k not in drop}
    environ.update(env or {})
    return subprocess.run([sys.executable, "-m", "evolve.cli", *args], cwd=cwd, env=environ, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def here(args: list[str], capsys: pytest.CaptureFixture) -> subprocess.CompletedProcess:
    """`eplb-evolve ARGS` in this process (quicker than a new interpreter); the caller has chdir'ed away
    from the install and stdout is captured, so it is no terminal either."""
    capsys.readouterr()
    try:
        code = cli_main(args)
    except SystemExit as exc:  # argparse errors
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out, err)


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def toy_config(folder: Path, **campaign: object) -> Path:
    """A toy campaign config and its seed, written into `folder` with paths relative to it."""
    (folder / "seed.py").write_text(SEED)
    extra = "".join(f"{key} = {json.dumps(value)}\n" for key, value in campaign.items())
    path = folder / "toy.toml"
    path.write_text(f'[campaign]\nseed_program = "seed.py"\nmax_minutes = 0.0\nworkers = 1\n{extra}'
                    f'[proposer]\nkind = "{TOY}:make_proposer"\n[task]\nfactory = "{TOY}:make_task"\n')
    return path


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---- paths: everything from the working directory ------------------------------------------------------
def test_run_runs_show_promote_use_the_working_directory(tmp_path: Path, monkeypatch, capsys) -> None:
    installed = sorted(p.name for p in (REPO / "candidates").glob("*.py"))
    toy_config(tmp_path)
    proc = cli(["run", "--config", "toy.toml", "--max-evaluations", "6"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    runs = [p.parent for p in (tmp_path / "results").glob("*/archive.sqlite")]
    assert len(runs) == 1
    run_dir = runs[0]
    assert f"new run: {run_dir.resolve()}" in proc.stdout
    assert f"seed program: {(tmp_path / 'seed.py').resolve()}" in proc.stdout

    monkeypatch.chdir(tmp_path)
    listed = here(["runs"], capsys)
    header = listed.stdout.splitlines()[1].split()
    assert header[:5] == ["run", "date", "dataset", "split", "seed"] and "holdout" in header
    row = listed.stdout.splitlines()[2].split()
    assert row[0] == run_dir.name and row[3:5] == ["toy", "search"]
    monkeypatch.chdir(REPO)
    elsewhere = here(["runs", str(tmp_path / "results"), str(run_dir)], capsys)
    monkeypatch.chdir(tmp_path)
    rows = [line for line in elsewhere.stdout.splitlines() if line.startswith(run_dir.name)]
    assert len(rows) == 1  # a run named twice (as itself and inside its folder) is listed once

    pid = re.search(r"best ([0-9a-f]{12}) score", proc.stdout).group(1)
    promoted = here(["promote", run_dir.name, pid, "--name", "toy_best"], capsys)
    assert promoted.returncode == 0, promoted.stderr
    target = tmp_path / "candidates" / "toy_best.py"
    assert target.is_file() and f"promoted {pid} to {target.resolve()}" in promoted.stdout
    assert f"written to {(tmp_path / 'candidates').resolve()} (working directory)" in promoted.stdout
    assert sorted(p.name for p in (REPO / "candidates").glob("*.py")) == installed  # the install is untouched

    missing = here(["promote", run_dir.name, "zzzz"], capsys)
    assert missing.returncode == 2
    assert "no program with id starting 'zzzz'" in missing.stderr and "give more of the id" not in missing.stderr

    first = here(["show", run_dir.name, "--step", "1"], capsys)
    assert first.returncode == 0 and first.stdout.startswith("step 1: ") and "parent " in first.stdout
    step = here(["show", run_dir.name, "--diff", pid], capsys)
    assert step.returncode == 0 and f"program {pid}" in step.stdout and "+++ child" in step.stdout
    assert re.search(r"^-    return \[", step.stdout, re.M) and re.search(r"^\+    return \[", step.stdout, re.M)


def test_leaderboard_and_evaluate_read_local_candidates(tmp_path: Path) -> None:
    save_npz(skewed_trace(steps=300), tmp_path / "small.npz")
    evaluated = cli(["evaluate", "seed", "--dataset", "small.npz", *SMALL_FLAGS, "--json"], tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    said = evaluated.stderr
    assert re.search(rf"evaluate: {re.escape(str((REPO / 'candidates' / 'seed.py').resolve()))} on \S+ \(\w+ split",
                     said)
    assert "starting the sandbox" in said
    windows = [w["window"] for w in json.loads(evaluated.stdout)["per_window"]]
    assert windows and all(type(w) is int for w in windows)

    (tmp_path / "candidates").mkdir()
    (tmp_path / "candidates" / "mine.py").write_text((REPO / "candidates" / "seed.py").read_text())
    board = cli(["leaderboard", "mine", "--dataset", "small.npz", *SMALL_FLAGS, "--oracle", "none", "--no-ceiling"],
                tmp_path)
    assert board.returncode == 0, board.stderr
    assert f"candidates from {(tmp_path / 'candidates').resolve()} (working directory)" in board.stdout
    assert "(bundled with the install)" in board.stdout  # the dataset manifests, and it says so
    assert "mine" in board.stdout
    assert (tmp_path / "results" / "leaderboard" / "leaderboard.csv").is_file()


# ---- cost cap, endpoint check, exit status ----------------------------------------------------------------
def test_a_cost_cap_with_an_unpriced_model_refuses_to_start(tmp_path: Path) -> None:
    proc = cli(["run", "--proposer", "llm", "--model", "my-model", "--max-cost", "2"], tmp_path)
    assert proc.returncode == 2
    assert "--price-in" in one_line_error(proc) and "my-model" in proc.stderr
    priced = cli(["run", "--proposer", "llm", "--model", "my-model", "--max-cost", "2", "--price-in", "0.5",
                  "--price-out", "1.5", "--print-config"], tmp_path)
    assert priced.returncode == 0, priced.stderr
    assert 'name = "my-model"' in priced.stdout and "price_out = 1.5" in priced.stdout
    assert not (tmp_path / "results").exists()


@pytest.fixture
def endpoint():
    server = ChatServer()
    yield server
    server.close()


def llm_run(tmp_path: Path, url: str, *more: str) -> list[str]:
    toy_config(tmp_path)
    return ["run", "--config", "toy.toml", "--proposer", "llm", "--base-url", url,
            "--set", f"proposer.llm.api_key_env={KEY_ENV}", "--set", "proposer.llm.backoff_base_s=0.01", *more]


def test_endpoint_check_names_an_unknown_model_and_what_the_server_offers(tmp_path: Path, endpoint) -> None:
    proc = cli(llm_run(tmp_path, endpoint.url, "--model", "nosuch"), tmp_path, env={KEY_ENV: KEY})
    assert proc.returncode == 2
    line = one_line_error(proc)
    assert "does not serve model 'nosuch'; it offers: m, fast, slow" in line and "--model" in line
    assert endpoint.gets == ["/v1/models"] and endpoint.requests == []  # one cheap request, no proposal
    assert not (tmp_path / "results").exists()  # a failed start leaves no run behind


def test_endpoint_check_names_an_unreachable_url(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{closed_port()}/v1"
    proc = cli(llm_run(tmp_path, url, "--model", "m"), tmp_path, env={KEY_ENV: KEY})
    assert proc.returncode == 2
    line = one_line_error(proc)
    assert f"cannot reach {url}" in line and "--base-url" in line
    unchecked = cli(llm_run(tmp_path, url, "--model", "m", "--skip-endpoint-check", "--out", "r",
                            "--set", "proposer.llm.max_retries=0"), tmp_path, env={KEY_ENV: KEY})
    assert unchecked.returncode == 1  # no check: the proposals find out, and no child means a non-zero exit
    assert "proposals all failed" in unchecked.stdout and f"cannot reach {url}" in unchecked.stdout


def test_endpoint_check_names_a_missing_or_rejected_key_and_a_wrong_url(tmp_path: Path, endpoint) -> None:
    toy_config(tmp_path)
    no_key = cli(["run", "--config", "toy.toml", "--proposer", "llm"], tmp_path,
                 drop=("OPENAI_API_KEY", "OPENAI_BASE_URL"))
    assert no_key.returncode == 2 and "$OPENAI_API_KEY is not set" in one_line_error(no_key)

    endpoint.models_status = 401
    rejected = cli(llm_run(tmp_path, endpoint.url, "--model", "m"), tmp_path, env={KEY_ENV: "sk-wrong-key-123456"})
    line = one_line_error(rejected)
    assert "rejected the API key" in line and f"${KEY_ENV}" in line and "sk-wrong" not in line

    endpoint.models_status = 200
    wrong = cli(llm_run(tmp_path, endpoint.url.removesuffix("/v1"), "--model", "m"), tmp_path, env={KEY_ENV: KEY})
    assert "ends in /v1" in one_line_error(wrong)


def test_a_run_that_makes_no_child_exits_non_zero(tmp_path: Path, endpoint) -> None:
    # the server answers every proposal with a patch for another program: none applies
    proc = cli(llm_run(tmp_path, endpoint.url, "--model", "m", "--out", "r"), tmp_path, env={KEY_ENV: KEY})
    assert proc.returncode == 1, proc.stderr
    assert "proposals all failed" in proc.stdout and "no child was evaluated" in proc.stdout
    assert endpoint.gets == ["/v1/models"] and endpoint.requests  # checked once, then proposals were asked for


# ---- budgets, resume, progress without a terminal, run.log ---------------------------------------------
def test_budgets_are_named_and_resume_with_a_larger_one_continues(tmp_path: Path) -> None:
    toy_config(tmp_path)
    first = cli(["run", "--config", "toy.toml", "--max-evaluations", "5", "--out", "r"], tmp_path)
    assert first.returncode == 0, first.stderr
    assert "budgets: 5 evaluations (--max-evaluations)" in first.stdout
    assert ("stopped by campaign.max_evaluations; to continue: eplb-evolve run --resume r --max-evaluations 10"
            in first.stdout)
    assert re.search(r"^progress: step \d+, evaluations \d+/5", first.stdout, re.M)  # no terminal: progress lines
    log = (tmp_path / "r" / "run.log").read_text()
    for text in ("new run: ", "budgets: ", "progress: step 0", "run stopped: evaluation budget reached (5 of 5)"):
        assert text in log
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ new run", log)

    again = cli(["run", "--resume", "r"], tmp_path)
    assert again.returncode == 2
    assert "already used its evaluation budget (5 of 5)" in one_line_error(again)
    assert "--resume r --max-evaluations 10" in again.stderr

    more = cli(["run", "--resume", "r", "--max-evaluations", "10"], tmp_path)
    assert more.returncode == 0, more.stderr
    assert "resuming run:" in more.stdout and "evaluation budget reached (10 of 10)" in more.stdout
    assert (tmp_path / "r" / "run.log").read_text().count("run stopped:") == 2  # one log across sessions


def test_help_shows_budget_defaults_and_every_flag_has_help() -> None:
    parser = build_parser()
    text = parser._subparsers._group_actions[0].choices["run"].format_help()
    assert "--max-evaluations N   budget: children to evaluate (default 400)" in " ".join(text.split("\n"))
    assert "(default 3)" in text and "counted over all sessions" in text
    missing = []

    def walk(p: argparse.ArgumentParser, name: str) -> None:
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub_name, sub in action.choices.items():
                    walk(sub, f"{name} {sub_name}")
            elif action.option_strings and not (action.help or "").strip():
                missing.append(f"{name} {action.option_strings[0]}")
            elif action.option_strings and action.default not in (None, False, argparse.SUPPRESS) \
                    and "default" not in p.formatter_class(p.prog)._get_help_string(action):
                missing.append(f"{name} {action.option_strings[0]} (no default shown)")

    walk(parser, "eplb-evolve")
    assert missing == []
    compare = parser._subparsers._group_actions[0].choices["compare"].format_help()
    assert "95% interval" in compare and "%%" not in compare


# ---- example configs and the config reference ------------------------------------------------------------
def test_every_example_config_loads(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    assert {p.stem for p in CONFIGS} >= {"offline", "openai", "local", "ray"}
    for path in CONFIGS:
        config = Config.from_file(path)
        config.check()
        check_cost_cap(config)
        if config.proposer.kind == "llm":
            assert config.llm_config().model_specs()
        shown = here(["run", "--config", str(path), "--print-config"], capsys)
        assert shown.returncode == 0, f"{path.name}: {shown.stderr}"
        assert f"kind = \"{config.proposer.kind}\"" in shown.stdout
    assert not (tmp_path / "results").exists()


def test_print_config_lists_task_options_and_misplaced_keys_get_a_hint(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    shown = here(["run", "--print-config"], capsys)
    assert "#   task.options.dataset (default 'deepseek-v3')" in shown.stdout
    assert "#   task.options.split (default '')" in shown.stdout
    (tmp_path / "bad.toml").write_text('[campaign]\ndataset = "deepseek-v3"\n')
    line = one_line_error(here(["run", "--config", "bad.toml"], capsys))
    assert "unknown key campaign.dataset" in line and "[task.options]" in line
    (tmp_path / "bad.toml").write_text('[campaign]\nkind = "llm"\n')
    assert "'kind' belongs in [proposer]" in one_line_error(here(["run", "--config", "bad.toml"], capsys))


# ---- small edges --------------------------------------------------------------------------------------------
def test_version_and_suggestions_for_mistyped_flags_and_commands(tmp_path: Path) -> None:
    version = cli(["--version"], tmp_path)
    assert version.returncode == 0 and re.match(r"eplb-evolve \d+\.\d+", version.stdout)
    flag = cli(["run", "--max-evaluatons", "5"], tmp_path)
    assert flag.returncode == 2 and "did you mean --max-evaluations?" in flag.stderr
    command = cli(["rnu"], tmp_path)
    assert command.returncode == 2 and "did you mean 'run'?" in command.stderr


def test_diff_refuses_a_patch_that_apply_would_reject(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    old = (REPO / "candidates" / "seed.py").read_text()
    frozen = old.replace("import torch\n", "import torch  # changed outside the blocks\n", 1)
    assert frozen != old
    (tmp_path / "a.py").write_text(old)
    (tmp_path / "b.py").write_text(frozen)
    refused = here(["diff", "a.py", "b.py", "-o", "p.txt"], capsys)
    assert refused.returncode == 2 and "frozen code" in one_line_error(refused)
    assert not (tmp_path / "p.txt").exists()
    forced = here(["diff", "a.py", "b.py", "-o", "p.txt", "--force"], capsys)
    assert forced.returncode == 0 and "warning:" in forced.stderr and (tmp_path / "p.txt").is_file()


def test_generating_a_dataset_names_the_dataset_and_split(user_cache: Path, capsys) -> None:
    import dataclasses

    from evaluator.traces import registry

    manifest = registry.manifests()["deepseek-v2-lite"]
    small = dataclasses.replace(manifest, params={**manifest.params, "steps": 40})
    trace = registry.generate_split(small, "holdout", progress=True)
    assert trace.steps == 40
    assert f"generating dataset deepseek-v2-lite, split holdout (once per machine, cached in {user_cache})" \
        in capsys.readouterr().err


def test_reading_a_large_trace_file_shows_progress_on_a_terminal(tmp_path: Path, monkeypatch) -> None:
    import io

    from evaluator.traces import formats

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    trace = skewed_trace(steps=2000, layers=4, experts=64)
    path = formats.write_adrs_json(trace, tmp_path / "expert-load.json")
    assert path.stat().st_size > 1 << 20  # more than one read chunk: a bar is worth showing
    screen = Terminal()
    monkeypatch.setattr(sys, "stderr", screen)
    assert (formats.read_adrs_json(path).counts == trace.counts).all()
    assert "reading expert-load.json" in screen.getvalue() and re.search(r"/1\.\d+M", screen.getvalue())
