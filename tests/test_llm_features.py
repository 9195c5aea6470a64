"""Each LLM-side search feature against a scripted chat endpoint on 127.0.0.1, in a real campaign:
diff, rewrite and crossover requests, the prompt's worked example, standing and island history, the
bandit ensemble, and a replay of the transcript that rebuilds the same archive."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from evolve import campaign_cli
from evolve.archive import Archive
from evolve.bandit import ModelBandit
from evolve.prompt_sections import NOTES_SYSTEM
from tests.test_llm_proposer import KEY, KEY_ENV, ChatServer, reply
from tests.toy_task import TARGETS, fingerprint, toy_config

SEED = "# EVOLVE-BLOCK-START numbers\ndef solve():\n    return [0.0, 0.0, 0.0, 0.0]\n# EVOLVE-BLOCK-END\n"
RETURN = re.compile(r"    return \[([^\]]*)\]")


def _fenced_after(text: str, title: str) -> str:
    start = text.index("```python\n", text.index(title)) + len("```python\n")
    return text[start: text.index("\n```", start)] + "\n"


def _numbers(code: str) -> list[float]:
    return [float(x) for x in RETURN.search(code).group(1).split(",")]


def _program(values: list[float]) -> str:
    return SEED.replace("[0.0, 0.0, 0.0, 0.0]", "[" + ", ".join(f"{v:.4f}" for v in values) + "]")


def embedding(body: dict, headers: dict):
    """A coarse embedding: the program's numbers rounded, so small moves look alike."""
    numbers = re.findall(r"-?\s*\d+\.\d+", body["input"])  # the text is normalised code: "- 1.0000"
    values = [float(round(float(n.replace(" ", "")))) for n in numbers] + [1.0]
    data = {"object": "list", "model": body["model"], "usage": {"prompt_tokens": 5, "total_tokens": 5},
            "data": [{"object": "embedding", "index": 0, "embedding": values}]}
    return 200, {}, json.dumps(data).encode(), 0.0


def model(body: dict, headers: dict):
    """'good' moves halfway to the target, 'bad' moves away; the answer's form follows the request's kind."""
    if "input" in body:
        return embedding(body, headers)
    system, user = body["messages"][0]["content"], body["messages"][1]["content"]
    if system == NOTES_SYSTEM:
        return reply("- moving every number toward the target at once raised the score")(body, headers)
    parent = _fenced_after(user, "# Current program")
    values = _numbers(parent)
    if "# Second parent" in user:  # crossover: start from the mean of both parents
        other = _numbers(_fenced_after(user, "# Second parent"))
        values = [(a + b) / 2 for a, b in zip(values, other)]
    target = TARGETS["search"]
    if body["model"] == "good":
        values = [v + (t - v) / 2 for v, t in zip(values, target)]
    else:
        values = [v + 1.0 for v in values]
    child = _program(values)
    head = "<NAME>\nstep\n</NAME>\n\n<DESCRIPTION>\nMove the numbers.\n</DESCRIPTION>\n\n"
    if "rewrite the program as a whole" in system:
        return reply(head + "<CODE>\n" + child + "</CODE>\n")(body, headers)
    old, new = RETURN.search(parent).group(0), RETURN.search(child).group(0)
    return reply(head + f"<DIFF>\n<<<<<<< SEARCH\n{old}\n=======\n{new}\n>>>>>>> REPLACE\n</DIFF>\n")(body, headers)


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    srv = ChatServer(default=model)
    yield srv
    srv.close()


def _config(tmp_path: Path, name: str, url: str):
    config = toy_config(tmp_path, name, max_evaluations=24, workers=1, islands=1, migration_interval=0,
                        notes_interval=8)
    (tmp_path / "seed.py").write_text(SEED)
    config.proposer.kind = "llm"
    for key, value in {"models": [{"name": "good"}, {"name": "bad"}], "base_url": url, "api_key_env": KEY_ENV,
                       "mix": {"diff": 1.0, "rewrite": 1.0, "crossover": 1.0}, "ensemble": "bandit",
                       "max_patch_retries": 0, "backoff_base_s": 0.0, "max_retries": 0}.items():
        config.set(f"proposer.llm.{key}", value)
    return config


def test_every_llm_feature_in_one_campaign_and_its_replay(tmp_path: Path, server: ChatServer) -> None:
    config = _config(tmp_path, "recorded", server.url)
    campaign_cli.run_campaign(config, Path(config.campaign.out), False, holdout=False)
    transcript = Path(config.campaign.out) / "transcript.jsonl"
    records = [json.loads(line) for line in transcript.read_text().splitlines()]
    proposals = [r for r in records if r["kind"] == "proposal"]
    assert {r["mode"] for r in proposals} == {"diff", "rewrite", "crossover"}
    assert all(r["ok"] for r in proposals)
    # the bandit tried both models, then sent most proposals to the one that improves
    models = [r["model"] for r in proposals]
    assert models[:2] == ["good", "bad"] and models.count("good") > 2 * models.count("bad")
    # what the prompts carried
    asked = [m for m in server.requests]
    systems = " ".join(r["messages"][0]["content"] for r in asked)
    users = [r["messages"][1]["content"] for r in asked]
    assert "A worked example" in systems and "triple_scale" in systems
    assert any("# Where the search stands" in u and "Best so far" in u for u in users)
    assert any("# Recent attempts on this island" in u and "step: score" in u for u in users[3:])
    assert any("# Second parent" in u for u in users)
    # meta-recommendations: asked for every 8 proposals, archived, shown in later prompts
    notes_calls = [r for r in asked if r["messages"][0]["content"] == NOTES_SYSTEM]
    assert len(notes_calls) >= 2 and "step: score" in notes_calls[0]["messages"][1]["content"]
    assert any("# Notes on what has and has not worked" in u and "toward the target at once" in u for u in users)
    archive = Archive(Path(config.campaign.out) / "archive.sqlite")
    try:
        assert len(archive.events("meta_notes")) == len(notes_calls)
    finally:
        archive.close()
    # a replay of the transcript, with no endpoint, rebuilds the same archive
    replay = toy_config(tmp_path, "replayed", max_evaluations=24, workers=1, islands=1, migration_interval=0,
                        notes_interval=8)
    (tmp_path / "seed.py").write_text(SEED)  # toy_config writes its own seed there
    replay.proposer.kind, replay.proposer.transcript = "replay", str(transcript)
    served = len(server.requests)
    campaign_cli.run_campaign(replay, Path(replay.campaign.out), False, holdout=False)
    assert len(server.requests) == served
    replayed, recorded = Path(replay.campaign.out) / "archive.sqlite", Path(config.campaign.out) / "archive.sqlite"
    assert fingerprint(replayed) == fingerprint(recorded)


def test_embedding_novelty_rejects_lookalikes_and_caches_vectors(tmp_path: Path, server: ChatServer) -> None:
    config = _config(tmp_path, "embedded", server.url)
    config.set("campaign.novelty_embeddings", "coarse-embedder")
    config.set("campaign.novelty_embedding_threshold", 0.9999)
    config.set("proposer.llm.models", [{"name": "good"}])
    campaign_cli.run_campaign(config, Path(config.campaign.out), False, holdout=False)
    inputs = [r["input"] for r in server.requests if "input" in r]
    assert inputs and len(inputs) == len(set(inputs))  # each text embedded once: the rest came from the cache
    assert (Path(config.campaign.out) / "embeddings.sqlite").is_file()
    archive = Archive(Path(config.campaign.out) / "archive.sqlite")
    try:
        rejected = [s for s in archive.steps() if s.kind == "rejected"]
    finally:
        archive.close()
    assert rejected and all("similarity 1.0000" in s.error for s in rejected)


def test_bandit_is_a_pure_function_of_its_observations() -> None:
    def play() -> list[str]:
        bandit, picks = ModelBandit(["a", "b", "c"]), []
        for seed in range(40):
            name = bandit.choose(seed)
            picks.append(name)
            bandit.observe(name, improved=(name == "b" and seed % 2 == 0), tokens=1000 if name != "c" else 5000)
        return picks

    first = play()
    assert first == play()
    assert first[:3] == ["a", "b", "c"] and first.count("b") > first.count("a") > 0
