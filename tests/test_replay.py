"""Replaying a recorded transcript gives the same children, byte for byte, with no endpoint."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from evaluator.mutations import CATALOGUE
from evolve.errors import UserError
from evolve.proposers.base import ProgramView, ProposalRequest
from evolve.proposers.llm import LLMProposer
from evolve.proposers.llm_config import LLMConfig
from evolve.proposers.mutator import OfflineMutator
from evolve.proposers.replay import ReplayMismatch, ReplayProposer
from tests.test_llm_proposer import BAD_PATCH, KEY, KEY_ENV, SEED, ChatServer, reply, status


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)


def req(
    parent: str, generation: int, seed: int, inspirations: list[str] = (), runtime: float = 0.004
) -> ProposalRequest:
    metrics = {"balancedness_gpu": 0.8 + generation / 100, "runtime_s": runtime}
    return ProposalRequest(
        parent=ProgramView(f"p{generation}", parent, metrics, 0.8),
        inspirations=[ProgramView(f"i{k}", code, {"balancedness_gpu": 0.7}) for k, code in enumerate(inspirations)],
        recent_failures=["no-match: SEARCH text not found"] if generation % 2 else [],
        problem_statement="Balance the experts.",
        generation=generation,
        seed=seed,
    )


def campaign(proposer, generations: int = 6, runtime: float = 0.004) -> list[tuple]:
    """A chain: each successful child becomes the next parent; returns what each proposal gave."""
    parent, seen = SEED, [SEED]
    out = []
    for gen in range(1, generations + 1):
        proposal = proposer.propose(req(parent, gen, seed=100 + gen, inspirations=seen[-2:-1], runtime=runtime))
        out.append((proposal.ok, proposal.child_code, proposal.patch_text, proposal.name, proposal.error,
                    proposal.attempts, proposal.model, bool(proposal.extra.get("budget_exhausted"))))
        if proposal.ok:
            parent = proposal.child_code
            seen.append(parent)
    return out


def record(tmp_path: Path, **changes) -> tuple[list[tuple], Path]:
    """Run the chain against a scripted server; the model's patches come from the offline mutator."""
    server = ChatServer()
    state = {"gen": 0}

    def model(body: dict, headers: dict):
        # the parent is the code fenced in the user message; write a real patch for it
        user = body["messages"][1]["content"]
        start = user.index("```python\n", user.index("# Current program")) + len("```python\n")
        parent = user[start: user.index("\n```", start)] + "\n"
        state["gen"] += 1
        request = ProposalRequest(ProgramView("x", parent), seed=state["gen"])
        patch = OfflineMutator(catalogue=CATALOGUE).propose(request).patch_text
        return reply(patch)(body, headers)

    server.default = model
    # gen 1 ok; gen 2 one 500 then ok; gen 3 a bad patch then a good one; gen 4 the endpoint stays down
    server.script.extend([model, status(500, "hiccup"), model, reply(BAD_PATCH), model] + [status(503, "down")] * 3)
    settings = dict(
        models=[{"name": "fast", "weight": 3, "price_in": 1, "price_out": 1},
                {"name": "strong", "weight": 1, "price_in": 3, "price_out": 9}],
        base_url=server.url, api_key_env=KEY_ENV, max_retries=2, backoff_base_s=0.0, prompt_max_chars=30_000,
    )
    settings.update(changes)
    proposer = LLMProposer(LLMConfig(**settings), transcript=tmp_path / "transcript.jsonl", sleep=lambda s: None)
    try:
        results = campaign(proposer)
    finally:
        server.close()
    return results, tmp_path / "transcript.jsonl"


def test_replay_gives_the_same_children_byte_for_byte(tmp_path):
    recorded, transcript = record(tmp_path)
    oks = [r[0] for r in recorded]
    assert oks.count(False) == 1 and not recorded[3][0] and "HTTP 503" in recorded[3][4]
    assert recorded[2][5] == 2  # the bad patch was retried in the conversation
    replayed = campaign(ReplayProposer(transcript))
    assert replayed == recorded


def test_replay_survives_measured_numbers_that_differ(tmp_path):
    """A rerun measures another runtime, so its prompts differ; the request identity still finds the replies."""
    recorded, transcript = record(tmp_path)
    assert campaign(ReplayProposer(transcript), runtime=0.0051) == recorded


def test_replay_needs_no_endpoint_and_costs_nothing(tmp_path):
    _, transcript = record(tmp_path)
    replay = ReplayProposer(transcript)
    proposal = replay.propose(req(SEED, 1, seed=101))
    assert proposal.ok and proposal.cost == 0.0 and proposal.extra["replayed"]
    assert proposal.extra["recorded_cost"] > 0


def test_unknown_prompt_names_generation_and_hash(tmp_path):
    _, transcript = record(tmp_path)
    replay = ReplayProposer(transcript)
    with pytest.raises(ReplayMismatch) as info:
        replay.propose(req(SEED, 7, seed=999))  # a seed the recording never used
    message = str(info.value)
    assert "generation 7" in message and "prompt sha256 " in message
    assert len(message.split("prompt sha256 ")[1].split()[0].rstrip(",")) == 64


def test_replay_reproduces_budget_exhaustion(tmp_path):
    recorded, transcript = record(tmp_path, max_tokens_total=400)
    assert any(r[7] for r in recorded)
    assert campaign(ReplayProposer(transcript)) == recorded


def test_damaged_transcript_is_a_clear_error(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps({"kind": "header"}) + "\n{oops\n")
    with pytest.raises(UserError, match="line 2 is not JSON"):
        ReplayProposer(path)
    with pytest.raises(UserError, match="does not exist"):
        ReplayProposer(tmp_path / "missing.jsonl")
