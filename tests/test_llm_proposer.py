"""The LLM proposer against a real HTTP server on 127.0.0.1 speaking the chat-completions protocol.

The server is scripted per test: each request pops the next action (a reply, an HTTP error, a stall, a
malformed body). Backoff sleeps are recorded instead of slept, so the tests are fast and check the
delays the proposer asked for, not the wall clock.
"""
from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

import pytest

from evolve.patch import make_patch
from evolve.prompts import prompt_hash
from evolve.proposers.base import ProgramView, ProposalRequest
from evolve.proposers.llm import LLMProposer
from evolve.proposers.llm_config import LLMConfig

REPO = Path(__file__).resolve().parents[1]
SEED = (REPO / "candidates" / "seed.py").read_text()
KEY = "sk-test-0123456789-SECRET-abcdef"
KEY_ENV = "EVOLVE_TEST_LLM_KEY"


def good_patch(parent: str = SEED, tag: str = "a") -> str:
    """A patch that applies to `parent`: a comment line added inside the policy block."""
    marker = "# EVOLVE-BLOCK-START policy\n"
    child = parent.replace(marker, marker + f"# tuned by the fake model ({tag})\n", 1)
    return make_patch(parent, child, name=f"fake_{tag}", description="A harmless edit from the fake model.")


BAD_PATCH = """<NAME>
broken
</NAME>

<DESCRIPTION>
SEARCH text that is not in the program.
</DESCRIPTION>

<DIFF>
<<<<<<< SEARCH
this line is nowhere in the program
=======
neither is this one
>>>>>>> REPLACE
</DIFF>
"""


def completion(text: str | None, model: str = "m", prompt_tokens: int = 100, completion_tokens: int = 50) -> dict:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


# an action: (status, headers, body bytes, stall seconds); `Responder` builds one from the request
Action = tuple[int, dict[str, str], bytes, float]
Responder = Callable[[dict[str, Any], dict[str, str]], Action]


def reply(text: str | None, **usage: int) -> Responder:
    return lambda body, headers: (200, {}, json.dumps(completion(text, body.get("model", "m"), **usage)).encode(), 0.0)


def status(code: int, message: str, headers: dict[str, str] | None = None) -> Responder:
    payload = json.dumps({"error": {"message": message, "type": "error", "code": code}}).encode()
    return lambda body, h: (code, headers or {}, payload, 0.0)


def raw(code: int, data: bytes) -> Responder:
    return lambda body, headers: (code, {}, data, 0.0)


def stall(seconds: float, then: Responder) -> Responder:
    def respond(body: dict, headers: dict) -> Action:
        code, hdrs, data, _ = then(body, headers)
        return code, hdrs, data, seconds

    return respond


class ChatServer:
    """A chat-completions endpoint on an ephemeral port; `script` holds the next responses.

    `GET /v1/models` lists `models` (or answers `models_status` with an error body when it is set)."""

    def __init__(self, default: Responder | None = None, models: tuple[str, ...] = ("m", "fast", "slow")) -> None:
        self.models = list(models)
        self.models_status = 200
        self.gets: list[str] = []
        self.script: deque[Responder] = deque()
        self.default = default or reply(good_patch())
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:
                server.gets.append(self.path)
                if self.path.rstrip("/") != "/v1/models":
                    code, data = 404, json.dumps({"error": {"message": "not found"}}).encode()
                elif server.models_status != 200:
                    code = server.models_status
                    data = json.dumps({"error": {"message": "Incorrect API key provided", "code": code}}).encode()
                else:
                    code = 200
                    data = json.dumps({"object": "list", "data": [
                        {"id": m, "object": "model", "created": 0, "owned_by": "test"}
                        for m in server.models]}).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                headers = {k.lower(): v for k, v in self.headers.items()}
                server.requests.append(body)
                server.headers.append(headers)
                responder = server.script.popleft() if server.script else server.default
                code, extra, data, seconds = responder(body, headers)
                if seconds:
                    time.sleep(seconds)
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in extra.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client gave up (timeout test)
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.handle_error = lambda request, address: None  # type: ignore[method-assign]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    srv = ChatServer()
    yield srv
    srv.close()


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)


def make_proposer(url: str, tmp_path: Path, **changes: Any) -> tuple[LLMProposer, list[float]]:
    settings: dict[str, Any] = dict(
        models=[{"name": "fast", "weight": 1.0, "price_in": 1.0, "price_out": 2.0}],
        base_url=url,
        api_key_env=KEY_ENV,
        timeout_s=5.0,
        max_retries=3,
        max_patch_retries=2,
        backoff_base_s=0.01,
        backoff_max_s=0.05,
    )
    settings.update(changes)
    sleeps: list[float] = []
    proposer = LLMProposer(LLMConfig(**settings), transcript=tmp_path / "transcript.jsonl", sleep=sleeps.append)
    return proposer, sleeps


def request(seed: int = 0, generation: int = 1, parent: str = SEED) -> ProposalRequest:
    return ProposalRequest(
        parent=ProgramView("parent0", parent, {"balancedness_gpu": 0.8}, 0.8, "worst layer 3"),
        problem_statement="Balance the experts.",
        generation=generation,
        seed=seed,
    )


def records(tmp_path: Path, kind: str | None = None) -> list[dict]:
    lines = (tmp_path / "transcript.jsonl").read_text().splitlines()
    out = [json.loads(line) for line in lines if line.strip()]
    return [r for r in out if kind is None or r.get("kind") == kind]


# ---- the happy path ---------------------------------------------------------------------------------


def test_reply_becomes_child_and_is_recorded(server, tmp_path):
    proposer, sleeps = make_proposer(server.url, tmp_path)
    proposal = proposer.propose(request(generation=3))
    assert proposal.ok, proposal.error
    assert "# tuned by the fake model (a)" in proposal.child_code
    assert proposal.name == "fake_a" and proposal.model == "fast" and proposal.attempts == 1
    assert (proposal.tokens_in, proposal.tokens_out) == (100, 50)
    assert proposal.cost == pytest.approx((100 * 1.0 + 50 * 2.0) / 1e6)
    assert sleeps == []
    sent = server.requests[0]
    assert sent["model"] == "fast" and sent["messages"][0]["role"] == "system"
    assert server.headers[0]["authorization"] == f"Bearer {KEY}"
    (call,) = records(tmp_path, "call")
    for key in ("model", "prompt_hash", "messages", "reply", "usage", "latency_s", "attempt", "generation"):
        assert key in call
    assert call["generation"] == 3 and call["attempt"] == 1 and call["prompt_hash"] == prompt_hash(call["messages"])
    assert call["usage"] == {"prompt_tokens": 100, "completion_tokens": 50}
    (outcome,) = records(tmp_path, "proposal")
    assert outcome["ok"] and outcome["child_sha256"]


def test_missing_usage_is_estimated_and_extra_body_is_sent(server, tmp_path):
    body = completion(good_patch())
    del body["usage"]
    server.script.append(raw(200, json.dumps(body).encode()))
    proposer, _ = make_proposer(server.url, tmp_path, extra_body={"top_k": 20})
    proposal = proposer.propose(request())
    assert proposal.ok and proposal.tokens_in > 1000 and proposal.tokens_out > 10
    assert records(tmp_path, "call")[0]["usage"]["estimated"] is True
    assert server.requests[0]["top_k"] == 20


def test_think_sections_are_ignored(server, tmp_path):
    server.script.append(reply("<think>maybe\n<<<<<<< SEARCH\nnot real\n</think>\n" + good_patch()))
    proposer, _ = make_proposer(server.url, tmp_path)
    assert proposer.propose(request()).ok


# ---- patch errors go back to the model ---------------------------------------------------------------


def test_failed_patch_is_sent_back_in_the_same_conversation(server, tmp_path):
    server.script.extend([reply(BAD_PATCH), reply(good_patch())])
    proposer, _ = make_proposer(server.url, tmp_path)
    proposal = proposer.propose(request())
    assert proposal.ok and proposal.attempts == 2
    first, second = server.requests
    assert len(second["messages"]) == len(first["messages"]) + 2
    assert second["messages"][-2] == {"role": "assistant", "content": BAD_PATCH}
    assert "could not be applied" in second["messages"][-1]["content"]
    assert "this line is nowhere in the program" in second["messages"][-1]["content"]
    assert [r["attempt"] for r in records(tmp_path, "call")] == [1, 2]
    assert len(proposal.extra["attempt_errors"]) == 1


def test_patch_retries_are_bounded(server, tmp_path):
    server.default = reply(BAD_PATCH)
    proposer, _ = make_proposer(server.url, tmp_path, max_patch_retries=2)
    proposal = proposer.propose(request())
    assert not proposal.ok and proposal.attempts == 3 and len(server.requests) == 3
    assert "patch did not apply after 3 attempt(s)" in proposal.error
    assert (proposal.tokens_in, proposal.tokens_out) == (300, 150)


# ---- endpoint faults -------------------------------------------------------------------------------


def test_429_honours_retry_after(server, tmp_path):
    server.script.extend([status(429, "slow down", {"Retry-After": "7"}), reply(good_patch())])
    proposer, sleeps = make_proposer(server.url, tmp_path)
    assert proposer.propose(request()).ok
    assert sleeps == [7.0]
    calls = records(tmp_path, "call")
    assert [c["final"] for c in calls] == [False, True] and "429" in calls[0]["error"]


def test_5xx_backs_off_exponentially_with_jitter(server, tmp_path):
    server.script.extend([status(500, "boom"), status(502, "bad gateway"), status(503, "busy"), reply(good_patch())])
    proposer, sleeps = make_proposer(server.url, tmp_path, backoff_base_s=1.0, backoff_max_s=100.0)
    assert proposer.propose(request()).ok
    assert len(sleeps) == 3
    for i, delay in enumerate(sleeps):
        assert 0.5 * 2**i <= delay <= 2**i


def test_timeout_is_retried(server, tmp_path):
    server.script.append(stall(2.0, reply(good_patch())))
    proposer, sleeps = make_proposer(server.url, tmp_path, timeout_s=0.3)
    proposal = proposer.propose(request())
    assert proposal.ok and len(sleeps) == 1
    assert "timed out" in records(tmp_path, "call")[0]["error"]


@pytest.mark.parametrize(
    "bad",
    [raw(200, b"{not json"), raw(200, b""), reply(None), reply("   "),
     raw(200, json.dumps({"id": "x", "object": "chat.completion", "choices": []}).encode())],
    ids=["invalid-json", "empty-body", "null-content", "blank-content", "no-choices"],
)
def test_malformed_and_empty_replies_are_retried(server, tmp_path, bad):
    server.script.extend([bad, reply(good_patch())])
    proposer, sleeps = make_proposer(server.url, tmp_path)
    proposal = proposer.propose(request())
    assert proposal.ok, proposal.error
    assert len(sleeps) == 1 and len(server.requests) == 2


def test_exhausted_retries_give_a_failed_proposal_and_the_next_one_works(server, tmp_path):
    server.script.extend([status(500, "down")] * 4)
    proposer, sleeps = make_proposer(server.url, tmp_path, max_retries=3)
    failed = proposer.propose(request())
    assert not failed.ok and "HTTP 500" in failed.error and "after 4 tries" in failed.error
    assert len(sleeps) == 3 and not failed.extra["budget_exhausted"]
    assert proposer.propose(request(seed=1)).ok


def test_connection_refused_is_retried_then_reported(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proposer, sleeps = make_proposer(f"http://127.0.0.1:{port}/v1", tmp_path, max_retries=2)
    proposal = proposer.propose(request())
    assert not proposal.ok and "cannot reach" in proposal.error and len(sleeps) == 2


def test_client_errors_are_not_retried(server, tmp_path):
    server.script.append(status(404, "The model `fast` does not exist"))
    proposer, sleeps = make_proposer(server.url, tmp_path)
    proposal = proposer.propose(request())
    assert not proposal.ok and "does not serve model 'fast'" in proposal.error
    assert sleeps == [] and len(server.requests) == 1


# ---- reasoning models --------------------------------------------------------------------------------


def reasoning_model(body: dict, headers: dict) -> Action:
    """Refuses `temperature` and `max_tokens` the way OpenAI's reasoning models do."""
    if "temperature" in body:
        return status(400, "Unsupported value: 'temperature' does not support 0.8 with this model.")(body, headers)
    if "max_tokens" in body:
        return status(
            400, "Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens'."
        )(body, headers)
    return reply(good_patch())(body, headers)


def test_reasoning_model_parameters_are_adapted_and_remembered(server, tmp_path):
    server.default = reasoning_model
    proposer, sleeps = make_proposer(server.url, tmp_path)
    assert proposer.propose(request()).ok
    assert len(server.requests) == 3 and sleeps == []
    last = server.requests[-1]
    assert "temperature" not in last and "max_tokens" not in last and last["max_completion_tokens"] == 8192
    assert proposer.propose(request(seed=1)).ok
    assert len(server.requests) == 4  # remembered: the second proposal needs one call


# ---- budget ------------------------------------------------------------------------------------------


def test_token_budget_stops_new_proposals(server, tmp_path):
    proposer, _ = make_proposer(server.url, tmp_path, max_tokens_total=200)
    assert proposer.budget_left()["tokens"] == 200 and not proposer.exhausted
    assert proposer.propose(request(seed=0)).ok  # 150 tokens
    assert proposer.budget_left()["tokens"] == 50 and not proposer.exhausted
    last = proposer.propose(request(seed=1))  # 300 in total: over
    assert last.ok and last.extra["budget_exhausted"] and proposer.exhausted
    refused = proposer.propose(request(seed=2))
    assert not refused.ok and refused.extra["budget_exhausted"] and "budget exhausted" in refused.error
    assert len(server.requests) == 2  # the refused proposal made no call


def test_cost_budget_stops_patch_retries_too(server, tmp_path):
    server.default = reply(BAD_PATCH, prompt_tokens=1000, completion_tokens=1000)
    proposer, _ = make_proposer(server.url, tmp_path, max_cost=0.0025, max_patch_retries=5)
    proposal = proposer.propose(request())  # $0.003 per call
    assert not proposal.ok and proposal.extra["budget_exhausted"] and len(server.requests) == 1
    assert proposer.budget_left()["cost"] == 0.0
    assert records(tmp_path, "skip")[0]["attempt"] == 2


def test_max_cost_needs_prices(tmp_path):
    from evolve.errors import UserError

    with pytest.raises(UserError, match="no price"):
        LLMProposer(LLMConfig(models=[{"name": "free"}], max_cost=1.0))


# ---- the ensemble ------------------------------------------------------------------------------------


def test_ensemble_draws_models_by_weight_and_seed(server, tmp_path):
    models = [{"name": "fast", "weight": 3.0, "price_in": 0.1, "price_out": 0.1},
              {"name": "strong", "weight": 1.0, "price_in": 5.0, "price_out": 15.0}]
    proposer, _ = make_proposer(server.url, tmp_path, models=models)
    chosen = [proposer.propose(request(seed=s)).model for s in range(24)]
    assert [r["model"] for r in server.requests] == chosen
    assert chosen.count("fast") > chosen.count("strong") > 0
    again, _ = make_proposer(server.url, tmp_path, models=models)
    assert [again.choose_model(s).name for s in range(24)] == chosen


# ---- the key never leaves the environment --------------------------------------------------------------


def test_api_key_is_never_written(server, tmp_path, caplog):
    def echo_key(body: dict, headers: dict) -> Action:
        return status(401, f"Incorrect API key provided: {headers.get('authorization')}")(body, headers)

    def echo_500(body: dict, headers: dict) -> Action:
        return status(500, f"internal error for {headers.get('authorization')}")(body, headers)

    server.script.extend([echo_500, reply(f"here is your key {KEY}\n" + good_patch()), echo_key])
    caplog.set_level(logging.DEBUG)
    proposer, _ = make_proposer(server.url, tmp_path)
    ok = proposer.propose(request(seed=0))
    rejected = proposer.propose(request(seed=1))
    assert ok.ok and not rejected.ok
    assert "rejected the API key" in rejected.error and KEY_ENV in rejected.error
    assert KEY not in rejected.error and KEY not in ok.error
    text = (tmp_path / "transcript.jsonl").read_text()
    assert KEY not in text and f"[secret {KEY_ENV} removed]" in text
    assert KEY not in caplog.text
    assert KEY not in repr(proposer.config)
