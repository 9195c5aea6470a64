"""Secrets of the environment never leave through a program or a model: each disguise is caught, a key a
candidate program raises never reaches `evaluate --json`, the archive, `show` or the next prompt, and
ordinary text passes unchanged."""
from __future__ import annotations

import base64
import json
import os
import sqlite3
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest

from evaluator.traces import save_npz
from evolve import scrub as secrets
from evolve.scrub import Scrubber, environment_secrets, looks_secret
from tests.evaluator_helpers import SEED_CODE, SMALL, skewed_trace

REPO = Path(__file__).resolve().parents[1]
KEY = "sk-proj-Q7vLm2Xw9Rt4Kp8Zs1Nd6Hf3Jb5Gc0Ya"
MARKER = "[secret OPENAI_API_KEY removed]"


def b64(text: str, prefix: str = "", urlsafe: bool = False) -> str:
    encode = base64.urlsafe_b64encode if urlsafe else base64.b64encode
    return encode((prefix + text + "!?").encode()).decode()


DISGUISES = {
    "exact": KEY,
    "reversed": KEY[::-1],
    "spaced": " ".join(KEY),
    "dashed": "-".join(KEY),
    "one per line": "\n".join(KEY),
    "a list of its letters": str(list(KEY)),
    "upper case": KEY.upper(),
    "lower case": KEY.lower(),
    "reversed, spaced, upper": " ".join(KEY[::-1]).upper(),
    "base64 at offset 0": b64(KEY),
    "base64 at offset 1": b64(KEY, "a"),
    "base64 at offset 2": b64(KEY, "ab"),
    "urlsafe base64 at offset 1": b64(KEY, "x", urlsafe=True),
    "base64 of a header holding it": base64.b64encode(f"Authorization: Bearer {KEY}".encode()).decode(),
    "hex": KEY.encode().hex(),
    "upper hex": KEY.encode().hex().upper(),
    "escaped hex": "".join(f"\\x{b:02x}" for b in KEY.encode()),
    "url-encoded": urllib.parse.quote(f"key={KEY}&x=1", safe="="),
    "fully percent-encoded": "".join(f"%{b:02X}" for b in KEY.encode()),
    "its first 16 characters": KEY[:16],
    "a piece from its middle, upper case": KEY[9:30].upper(),
    "a piece after a character whose lower case is two": "İ" + KEY[-18:],
}


@pytest.fixture
def scrubber() -> Scrubber:
    return Scrubber({"OPENAI_API_KEY": KEY, "HF_TOKEN": "hf_TmVyZXJHb29kS2V5Rm9yVGVzdHM"})


@pytest.mark.parametrize("name", list(DISGUISES))
def test_every_disguise_is_caught(scrubber: Scrubber, name: str):
    text = f"ValueError: cannot plan ({DISGUISES[name]}) in window 3"
    out = scrubber.scrub(text)
    assert MARKER in out, out
    assert out.startswith("ValueError: cannot plan (") and out.endswith(") in window 3"), out
    for form in ("".join(KEY[i:i + 10]) for i in range(0, len(KEY) - 10, 5)):
        assert form.lower() not in out.lower()


def test_ordinary_text_is_unchanged(scrubber: Scrubber):
    traceback = ("Traceback (most recent call last):\n  File \"<program>\", line 41, in rebalance_experts\n"
                 "IndexError: index 288 is out of bounds for dimension 1 with size 288\n")
    feedback = "balancedness_gpu 0.9123 (worst window 7: 0.8811), speed-up over no balancing 1.204x"
    metrics = json.dumps({"balancedness_gpu": 0.91234, "runtime_median_s": 0.0017, "sha256": "ab" * 32})
    image = base64.b64encode(bytes(range(256)) * 40).decode()
    for text in (SEED_CODE, traceback, feedback, metrics, image, "ß İstanbul ǅ", ""):
        assert scrubber.scrub(text) is text


def test_pieces_shorter_than_a_fragment_stay(scrubber: Scrubber):
    text = f"{KEY[:15]} and {KEY[20:35]}"
    assert scrubber.scrub(text) == text
    assert scrubber.scrub(KEY[:20] + KEY[10:30]) == MARKER + MARKER  # two overlapping copies of pieces


def test_an_empty_environment_scrubs_nothing():
    empty = Scrubber({"OPENAI_API_KEY": "short"})  # under 8 characters: not a secret
    assert not empty and empty.scrub(f"short {KEY}") == f"short {KEY}"


def test_text_whose_lowercase_changes_length_is_still_scrubbed(scrubber: Scrubber):
    out = scrubber.scrub("İ" + KEY.upper())
    assert out == "İ" + MARKER


def test_the_longer_of_two_overlapping_secrets_is_removed_whole():
    both = Scrubber({"SHORT_TOKEN": KEY[:12], "OPENAI_API_KEY": KEY})
    assert both.scrub(f"a {KEY} b {KEY[:12]} c") == f"a {MARKER} b [secret SHORT_TOKEN removed] c"


def test_secret_looking_names():
    env = {"OPENAI_API_KEY": KEY, "MY_SERVICE_TOKEN": "t" * 20, "DB_PASSWORD": "hunter2hunter2",
           "HF_TOKEN": "hf_" + "x" * 30,
           "GIT_AUTHOR_NAME": "Ada Lovelace", "SSH_AUTH_SOCK": "/tmp/ssh-abc/agent.1", "PATH": "/usr/bin:/bin",
           "SHORT_KEY": "abc", "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}
    assert set(environment_secrets(env)) == {"OPENAI_API_KEY", "MY_SERVICE_TOKEN", "DB_PASSWORD", "HF_TOKEN",
                                             "AWS_SECRET_ACCESS_KEY"}
    assert looks_secret("anthropic_api_key") and looks_secret("X_CREDENTIALS") and not looks_secret("HOME")


def test_registered_secret_with_an_ordinary_name(monkeypatch):
    monkeypatch.setenv("LLM_ENDPOINT_CODE", "abcdefgh12345678")
    secrets.refresh()
    try:
        assert "abcdefgh12345678" in secrets.scrub("abcdefgh12345678")  # the name does not look secret
        secrets.add_secret("LLM_ENDPOINT_CODE", "abcdefgh12345678")
        assert secrets.scrub("x abcdefgh12345678") == "x [secret LLM_ENDPOINT_CODE removed]"
    finally:
        monkeypatch.undo()
        secrets.refresh()


def test_scrub_data_keeps_the_shape(scrubber: Scrubber):
    data = {"error": KEY, "nested": [{"a": KEY[::-1]}, ("t", 1.5)], "n": 3, KEY: None}
    out = scrubber.scrub_data(data)
    assert out == {"error": MARKER, "nested": [{"a": MARKER}, ("t", 1.5)], "n": 3, MARKER: None}


# ---- through the real task, CLI and campaign -----------------------------------------------------------
# The program builds the key from numbers (so its code holds no form of it) and raises and prints it.
_KEY_CODES = [ord(c) ^ 0x2A for c in KEY]
LEAKING_BALANCER = f'''

def rebalance_experts(weight, num_replicas, num_groups, num_nodes, num_gpus):
    key = "".join(chr(c ^ 0x2A) for c in {_KEY_CODES})
    print("my key is", key, "and backwards", key[::-1])
    raise RuntimeError("leaked " + key + " / " + " ".join(key) + " / " + key.upper())
'''

PROPOSER = '''
import json
from pathlib import Path
from evolve.prompts import build_messages
from evolve.proposers.base import Proposal

class Leaker:
    """First proposal: a child that raises the key; later ones: the parent with a comment. Every prompt
    the proposals would have sent is kept in prompts.jsonl."""
    name = "leaker"

    def __init__(self, run_dir):
        self.log = Path(run_dir).parent / "prompts.jsonl"
        self.calls = 0

    def propose(self, request):
        self.calls += 1
        with open(self.log, "a") as fh:
            fh.write(json.dumps({"failures": request.recent_failures, "messages": build_messages(request)}) + "\\n")
        child = request.parent.code + (LEAK if self.calls == 1 else f"\\n# variant {self.calls}\\n")
        return Proposal(patch_text="(patch)", child_code=child, name=f"leak_{self.calls}",
                        description="tries to leak", diff="(diff)", proposer="leaker")

def make(config, run_dir):
    return Leaker(run_dir)
'''


def _env(tmp_path: Path) -> dict[str, str]:
    env = {**os.environ, "OPENAI_API_KEY": KEY, "PYTHONPATH": str(REPO)}
    env.setdefault("EPLB_EVOLVE_CACHE", str(tmp_path / "cache"))
    return env


def _cli(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "evolve.cli", *args], cwd=tmp_path, env=_env(tmp_path),
                          capture_output=True, text=True, timeout=600)


def _task_flags(trace: Path) -> list[str]:
    return ["--dataset", str(trace), "--replicas", str(SMALL["num_replicas"]), "--groups", str(SMALL["num_groups"]),
            "--nodes", str(SMALL["num_nodes"]), "--gpus", str(SMALL["num_gpus"]), "--max-windows", "2"]


def _assert_no_key(text: str, where: str) -> None:
    folded = text.lower()
    for form in (KEY, KEY[::-1], " ".join(KEY), KEY.encode().hex()):
        assert form.lower() not in folded, f"{where} holds the key"


def test_a_raised_key_never_reaches_evaluate_json(tmp_path: Path):
    trace = save_npz(skewed_trace(), tmp_path / "small.npz")
    program = tmp_path / "leak.py"
    program.write_text(SEED_CODE + LEAKING_BALANCER)
    done = _cli(["evaluate", str(program), "--json", *_task_flags(trace)], tmp_path)
    assert done.returncode == 1, done.stderr
    result = json.loads(done.stdout)
    assert not result["correct"] and MARKER in result["error"], result["error"]
    _assert_no_key(done.stdout + done.stderr, "evaluate --json")
    table = _cli(["evaluate", str(program), *_task_flags(trace)], tmp_path)
    assert "INCORRECT" in table.stdout and MARKER in table.stdout
    _assert_no_key(table.stdout + table.stderr, "the evaluate table")


def test_a_raised_key_never_reaches_the_archive_show_or_the_next_prompt(tmp_path: Path):
    trace = save_npz(skewed_trace(), tmp_path / "small.npz")
    seed = tmp_path / "seed.py"
    seed.write_text(SEED_CODE)
    proposer = tmp_path / "leaker.py"
    proposer.write_text(f"LEAK = {LEAKING_BALANCER!r}\n" + PROPOSER)
    run_dir = tmp_path / "run"
    flags = _task_flags(trace)
    task_sets = [f"task.options.{key}={value}" for key, value in SMALL.items()] + ["task.options.max_windows=2"]
    done = _cli(["run", "--proposer", f"{proposer}:make", "--dataset", flags[1], "--max-evaluations", "3",
                 "--workers", "1", "--out", str(run_dir), "--set", "campaign.progress=false",
                 "--set", f"campaign.seed_program={seed}"] + [x for s in task_sets for x in ("--set", s)], tmp_path)
    assert done.returncode == 0, done.stderr
    _assert_no_key(done.stdout + done.stderr, "the run's output")

    with sqlite3.connect(run_dir / "archive.sqlite") as conn:
        error, stdout = conn.execute("SELECT r.error, r.stdout FROM results r JOIN programs p ON p.id = r.program_id "
                                     "WHERE p.patch_name = 'leak_1'").fetchone()
    assert MARKER in error and MARKER in stdout  # the program did raise and print it: scrubbed on the way in
    stored = b"".join(p.read_bytes() for p in run_dir.iterdir() if p.name.startswith("archive.sqlite"))
    _assert_no_key(stored.decode("latin-1"), "the archive file")

    prompts = [json.loads(line) for line in (tmp_path / "prompts.jsonl").read_text().splitlines()]
    later = [p for p in prompts if p["failures"]]
    assert later, "no later prompt carried the failed child's error"
    assert any(MARKER in m["content"] for p in later for m in p["messages"])
    _assert_no_key(json.dumps(prompts), "a prompt")

    shown = _cli(["show", str(run_dir), "--best"], tmp_path)
    assert shown.returncode == 0, shown.stderr
    with sqlite3.connect(run_dir / "archive.sqlite") as conn:
        child = conn.execute("SELECT id FROM programs WHERE patch_name = 'leak_1'").fetchone()[0]
    lineage = _cli(["show", str(run_dir), "--lineage", child[:12]], tmp_path)
    assert lineage.returncode == 0, lineage.stderr
    _assert_no_key(shown.stdout + lineage.stdout + lineage.stderr, "show")
    report = _cli(["report", str(run_dir), "--no-evaluate"], tmp_path)
    assert report.returncode == 0, report.stderr
    pages = [(run_dir / "report" / name).read_text() for name in ("report.html", "summary.json")]
    _assert_no_key("".join(pages) + report.stdout + report.stderr, "the report")


def test_a_transcript_record_is_scrubbed(tmp_path: Path, monkeypatch):
    from evolve.proposers.transcript import Transcript

    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    secrets.refresh()
    try:
        transcript = Transcript(tmp_path / "transcript.jsonl")
        transcript.write({"kind": "call", "reply": f"the key backwards: {KEY[::-1]}", "messages": [
            {"role": "user", "content": base64.b64encode(KEY.encode()).decode()}]})
        text = (tmp_path / "transcript.jsonl").read_text()
        record = json.loads(text)
        assert record["reply"] == f"the key backwards: {MARKER}" and MARKER in record["messages"][0]["content"]
        _assert_no_key(text, "the transcript")
    finally:
        monkeypatch.undo()
        secrets.refresh()
