"""Prompts: what they hold, that they are deterministic per seed, and how they keep under the size limit."""
from __future__ import annotations

from pathlib import Path

from evolve.patch import evolve_blocks
from evolve.prompts import (
    FORMAT_RULES,
    build_messages,
    patch_retry_message,
    prompt_hash,
    shown_code,
    total_chars,
)
from evolve.proposers.base import ProgramView, ProposalRequest

REPO = Path(__file__).resolve().parents[1]
SEED = (REPO / "candidates" / "seed.py").read_text()


def inspiration(i: int, size: int = 0) -> ProgramView:
    code = SEED.replace("# EVOLVE-BLOCK-START policy\n", f"# EVOLVE-BLOCK-START policy\n# inspiration {i}\n")
    code = code.replace("# EVOLVE-BLOCK-END\n", "# EVOLVE-BLOCK-END\n" + "#" * size + "\n", 1) if size else code
    return ProgramView(f"insp{i:02d}" + "0" * 10, code, {"balancedness_gpu": 0.7 + i / 100}, 0.7 + i / 100,
                       patch_name=f"idea_{i}")


def request(seed: int = 0, inspirations: int = 2, size: int = 0, **changes) -> ProposalRequest:
    fields = dict(
        parent=ProgramView("parent0123456789", SEED, {"balancedness_gpu": 0.81234, "runtime_s": 0.0042}, 0.81234,
                           "balancedness_gpu 0.81 (worst window 3: 0.74)\nlayers with the worst GPU balance: 7, 12"),
        inspirations=[inspiration(i, size) for i in range(inspirations)],
        recent_failures=["no-match: block 1: SEARCH text not found", "syntax: line 40: invalid syntax"],
        problem_statement="PROBLEM: balance expert load over GPUs.",
        seed=seed,
    )
    fields.update(changes)
    return ProposalRequest(**fields)


def test_prompt_holds_everything_a_model_needs():
    system, user = build_messages(request())
    assert system["role"] == "system" and user["role"] == "user"
    assert "PROBLEM: balance expert load over GPUs." in system["content"]
    for marker in ("<NAME>", "<DESCRIPTION>", "<DIFF>", "<<<<<<< SEARCH", "=======", ">>>>>>> REPLACE", "</DIFF>"):
        assert marker in system["content"]
    assert "EVOLVE-BLOCK-START" in system["content"] and "rebalance_experts" in system["content"]
    text = user["content"]
    assert SEED.rstrip() in text  # the parent's code, verbatim
    assert "balancedness_gpu 0.8123" in text and "runtime_s 0.0042" in text
    assert "worst window 3" in text
    assert "SEARCH text not found" in text and "invalid syntax" in text
    assert "# inspiration 0" in text and "# inspiration 1" in text and "idea_1" in text
    assert "replication, packing, policy" in text


def test_inspirations_show_only_their_blocks():
    text = build_messages(request(inspirations=1))[1]["content"]
    insp = text[text.index("## Inspiration 1"):]
    insp = insp[: insp.index("```", insp.index("```python") + 3)]
    assert "def rebalance_hierarchical" not in insp and "def replicate_experts" in insp


def test_same_seed_same_messages_and_phrasing_varies_with_seed():
    assert build_messages(request(seed=5)) == build_messages(request(seed=5))
    assert prompt_hash(build_messages(request(seed=5))) == prompt_hash(build_messages(request(seed=5)))
    intros = {build_messages(request(seed=s))[0]["content"].split("\n")[0] for s in range(20)}
    tasks = {build_messages(request(seed=s))[1]["content"].split("# Your task")[1] for s in range(20)}
    assert len(intros) >= 3 and len(tasks) >= 5


def test_prompt_hash_is_content_addressed():
    messages = build_messages(request())
    changed = [dict(m) for m in messages]
    changed[1]["content"] += " "
    assert len(prompt_hash(messages)) == 64 and prompt_hash(messages) != prompt_hash(changed)


def test_size_limit_drops_inspirations_last_first_then_keeps_the_parent():
    full = build_messages(request(inspirations=4, size=3000))
    limit = total_chars(full) - 2000
    cut = build_messages(request(inspirations=4, size=3000), max_chars=limit)
    text = cut[1]["content"]
    assert total_chars(cut) <= limit
    assert "# inspiration 0" in text and "# inspiration 3" not in text
    tiny = build_messages(request(inspirations=4, size=3000), max_chars=1000)
    text = tiny[1]["content"]
    assert "Inspiration" not in text and SEED.rstrip() in text  # over the limit, but the parent stays whole
    assert FORMAT_RULES.splitlines()[0] in tiny[0]["content"]


def test_long_feedback_is_shortened_before_the_parent():
    feedback = "\n".join(f"window {i}: balancedness 0.8" for i in range(400))
    req = request(inspirations=0, parent=ProgramView("p", SEED, {}, None, feedback))
    text = build_messages(req, max_chars=len(SEED) + 6000)[1]["content"]
    assert "window 0:" in text and "window 399:" not in text and "more lines" in text and SEED.rstrip() in text


def test_retry_message_carries_the_engine_feedback():
    message = patch_retry_message("block 1: SEARCH text not found\n--- detail", attempts_left=2)
    assert "SEARCH text not found" in message and "--- detail" in message and "2 more tries" in message
    assert "one more try" in patch_retry_message("x", 1)


def test_a_parent_of_megabytes_is_shown_in_part_with_a_note():
    padding = "".join(f"PAD_{i} = {i}  # frozen filler\n" for i in range(120_000))
    tail = "def frozen_tail():\n    return 'the last line'\n"
    code = SEED.replace("# EVOLVE-BLOCK-END\n", "# EVOLVE-BLOCK-END\n" + padding, 1) + tail
    assert len(code) > 3_000_000
    req = request(inspirations=0, parent=ProgramView("p", code, {}, None, "x" * 100_000))
    text = build_messages(req)[1]["content"]
    assert len(text) < 60_000
    shown, cut = shown_code(code)
    assert cut > 100_000 and shown in text
    for block in evolve_blocks(code):  # every editable block is shown whole, with its markers
        assert block.body in text and f"# EVOLVE-BLOCK-START {block.label}" in text
    assert SEED.splitlines()[0] in text and "return 'the last line'" in text  # head and tail of the program
    assert "PAD_0 = 0" in text and "PAD_60000 = 60000" not in text
    assert f"# [... {cut} lines (" in text  # one run of cut lines, one note that counts them
    assert "of the program are not shown here" in text and "Copy SEARCH text only from the lines shown" in text
    roomy = build_messages(req, max_chars=200_000)[1]["content"]
    assert "x" * 16_000 in roomy and "x" * 16_001 not in roomy and "(84000 more characters)" in roomy  # one long line


def test_an_ordinary_parent_is_shown_whole():
    shown, cut = shown_code(SEED)
    assert shown == SEED and cut == 0
