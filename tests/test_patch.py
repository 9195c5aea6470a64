"""The patch engine: parsing, exact application, EVOLVE-block rules, errors, `make_patch`, the CLI."""
from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from evolve.errors import UserError
from evolve.patch import (
    Child,
    Patch,
    PatchError,
    SearchReplace,
    apply_patch,
    evolve_blocks,
    make_patch,
    parse_patch,
)
from evolve.patch_cli import register

REPO = Path(__file__).resolve().parents[1]
SEED_PATCH = Path(__file__).resolve().parents[2] / "shared/seeds/000_bb464e8d67d12b7d.txt"

PROGRAM = '''import torch


# EVOLVE-BLOCK-START replication
def replicate(weight, num_phy):
    n, m = weight.shape
    logcnt = torch.ones(n, m, dtype=torch.int64)
    for _ in range(m, num_phy):
        hottest = (weight / logcnt).max(dim=-1).indices
        logcnt[torch.arange(n), hottest] += 1
    return logcnt
# EVOLVE-BLOCK-END


def helper(x):
    return x + 1


# EVOLVE-BLOCK-START
def peak(weight, logcnt):
    n, m = weight.shape
    return (weight / logcnt).max(dim=-1).values
# EVOLVE-BLOCK-END


def rebalance_experts(weight, num_replicas, num_groups, num_nodes, num_gpus):
    logcnt = replicate(weight, num_replicas)
    return logcnt, peak(weight, helper(logcnt))
'''


def block(search: str, replace: str) -> str:
    return f"<<<<<<< SEARCH\n{search}=======\n{replace}>>>>>>> REPLACE\n"


def rejected(parent: str, reply: str, **kwargs: object) -> PatchError:
    with pytest.raises(PatchError) as info:
        apply_patch(parent, reply, **kwargs)
    assert "\n" not in str(info.value)
    return info.value


# ---------------------------------------------------------------------------------------------- seed


@pytest.fixture(scope="module")
def seed_patch_text() -> str:
    if not SEED_PATCH.exists():
        pytest.skip(f"{SEED_PATCH} is not present")
    return SEED_PATCH.read_text(encoding="utf-8")


def test_seed_patch_parses_fully(seed_patch_text: str) -> None:
    patch = parse_patch(seed_patch_text)
    assert patch.name == "top2_tail_adaptive_and_second_light_refine"
    assert patch.description.startswith("This edit improves both load balance and algorithm efficiency")
    assert patch.description.endswith("minimal additional overhead.")
    assert patch.full_code is None
    assert [b.index for b in patch.blocks] == [1, 2, 3]
    assert patch.blocks[0].search.startswith("    # Bounded multi-swap refinement per layer")
    assert patch.blocks[1].search.startswith("    # Hybrid allocation: D'Hondt for bulk")
    assert patch.blocks[2].replace.startswith("    # Strengthened replication fix-up per row:")
    for b in patch.blocks:
        assert b.search.endswith("\n") and b.replace.endswith("\n")
        assert "=======" not in b.search and "REPLACE" not in b.replace
        assert not b.alternatives


def test_seed_patch_applies_to_a_parent_holding_its_search_texts(seed_patch_text: str) -> None:
    patch = parse_patch(seed_patch_text)
    header = "import torch\n\n\ndef rebalance_experts(weight, num_replicas, num_groups, num_nodes, num_gpus):\n"
    parent = header + "".join(b.search + "    x = 1\n" for b in patch.blocks) + "    return weight\n"
    child = apply_patch(parent, seed_patch_text)
    for b in patch.blocks:
        assert b.replace in child.code
        assert b.search not in child.code
    assert child.code == header + "".join(b.replace + "    x = 1\n" for b in patch.blocks) + "    return weight\n"
    assert child.name == patch.name and child.notes == []
    assert child.diff.startswith("--- parent\n+++ child\n")


def test_seed_patch_on_seed_program_fails_block_by_block(seed_patch_text: str) -> None:
    seed = (REPO / "candidates/seed.py").read_text(encoding="utf-8")
    err = rejected(seed, seed_patch_text)
    assert err.kind == "no-match"
    assert [e.block for e in err.errors] == [1, 2, 3]
    firsts = ["# Bounded multi-swap refinement", "# Hybrid allocation: D'Hondt", "# One-step replication fix-up"]
    for e, first in zip(err.errors, firsts):
        assert str(e).startswith(f"block {e.block}: SEARCH text not found")
        assert first in str(e)
    assert "blocks 2 and 3 failed too" in str(err)
    assert all(str(e) in err.feedback() for e in err.errors)


# --------------------------------------------------------------------------------------------- parse


def test_parse_bare_blocks_records_reply_lines_and_ignores_chatter() -> None:
    reply = "Plan:\n\n" + block("a\n", "b\n") + "and then\n```\n" + block("c\nd\n", "") + "```\nbye\n"
    patch = parse_patch(reply)
    assert [(b.search, b.replace, b.index, b.line) for b in patch.blocks] == [
        ("a\n", "b\n", 1, 3),
        ("c\nd\n", "", 2, 10),
    ]
    assert patch.name == "" and patch.full_code is None


def test_parse_crlf_and_bom() -> None:
    reply = "\ufeff<NAME>\r\nx\r\n</NAME>\r\n" + block("a\n", "b\n").replace("\n", "\r\n")
    patch = parse_patch(reply)
    assert patch.name == "x"
    assert (patch.blocks[0].search, patch.blocks[0].replace) == ("a\n", "b\n")


def test_parse_full_rewrites() -> None:
    assert parse_patch("<CODE>\n```python\nx = 1\n```\n</CODE>").full_code == "x = 1\n"
    assert parse_patch("text\n```py\nx = 1\n```\nmore text").full_code == "x = 1\n"
    assert parse_patch("<CODE>\n\nx = 1\n\n</CODE>").full_code == "x = 1\n"


def test_parse_ignores_markers_inside_name_and_description() -> None:
    reply = ("<NAME>n</NAME>\n<DESCRIPTION>\nSplit at\n=======\nand\n>>>>>>> REPLACE\n</DESCRIPTION>\n"
             + block("a\n", "b\n"))
    patch = parse_patch(reply)
    assert len(patch.blocks) == 1 and patch.description.startswith("Split at")


def test_parse_several_dividers_keeps_every_reading() -> None:
    patch = parse_patch(block("a\n=======\nb\n", "a\n=======\nc\n"))
    b = patch.blocks[0]
    assert (b.search, b.replace) == ("a\n=======\nb\n", "a\n=======\nc\n")
    assert "2nd of 3" in b.how
    assert {(s, r) for s, r, _ in b.alternatives} == {
        ("a\n", "b\n=======\na\n=======\nc\n"),
        ("a\n=======\nb\n=======\na\n", "c\n"),
    }


@pytest.mark.parametrize(
    ("reply", "kind"),
    [
        ("", "no-patch"),
        ("just words", "no-patch"),
        ("<<<<<<< SEARCH\na\n>>>>>>> REPLACE\n", "malformed"),
        ("<<<<<<< SEARCH\na\n=======\nb\n", "truncated"),
        ("```python\nx = 1\n", "truncated"),
        (block("a\n", "b\n") + "<CODE>\nx = 1\n</CODE>\n", "malformed"),
    ],
)
def test_parse_errors(reply: str, kind: str) -> None:
    with pytest.raises(PatchError) as info:
        parse_patch(reply)
    assert info.value.kind == kind


# ------------------------------------------------------------------------------------- evolve blocks


def test_evolve_blocks_labels_lines_and_bodies() -> None:
    blocks = evolve_blocks(PROGRAM)
    assert [(b.label, b.start_line, b.end_line) for b in blocks] == [("replication", 4, 12), ("", 19, 23)]
    assert blocks[1].body == ("def peak(weight, logcnt):\n    n, m = weight.shape\n"
                              "    return (weight / logcnt).max(dim=-1).values\n")
    assert evolve_blocks("x = 1\n") == []


def test_evolve_blocks_of_the_seed_program_sit_between_their_markers() -> None:
    code = (REPO / "candidates/seed.py").read_text(encoding="utf-8")
    lines = code.split("\n")
    blocks = evolve_blocks(code)
    assert blocks
    for b in blocks:
        assert "EVOLVE-BLOCK-START" in lines[b.start_line - 1] and "EVOLVE-BLOCK-END" in lines[b.end_line - 1]
        assert b.body == "".join(line + "\n" for line in lines[b.start_line : b.end_line - 1])


@pytest.mark.parametrize(
    "code",
    ["# EVOLVE-BLOCK-START\nx = 1\n", "x = 1\n# EVOLVE-BLOCK-END\n", "# EVOLVE-BLOCK-START\n# EVOLVE-BLOCK-START a\n"],
)
def test_unbalanced_markers(code: str) -> None:
    with pytest.raises(PatchError) as info:
        evolve_blocks(code)
    assert info.value.kind == "markers"
    err = rejected(code, block("x = 1\n", "x = 2\n"))
    assert err.kind == "markers" and "fix them first" in str(err)


# --------------------------------------------------------------------------------------------- apply


def test_apply_returns_child_with_diff_and_metadata() -> None:
    reply = "<NAME>\nfaster\n</NAME>\n<DESCRIPTION>\nUse argmax.\n</DESCRIPTION>\n<DIFF>\n" + block(
        "        hottest = (weight / logcnt).max(dim=-1).indices\n",
        "        hottest = (weight / logcnt).argmax(dim=-1)\n"
    ) + "</DIFF>\n"
    child = apply_patch(PROGRAM, reply)
    assert isinstance(child, Child)
    assert child.code == PROGRAM.replace(".max(dim=-1).indices", ".argmax(dim=-1)")
    assert (child.name, child.description, child.notes) == ("faster", "Use argmax.", [])
    assert "-        hottest = (weight / logcnt).max(dim=-1).indices\n" in child.diff
    assert "+        hottest = (weight / logcnt).argmax(dim=-1)\n" in child.diff


def test_apply_accepts_a_parsed_patch() -> None:
    patch = Patch(blocks=[SearchReplace("    return x + 1\n", "    return x + 2\n", 1)])
    err = rejected(PROGRAM, patch)
    assert err.kind == "outside-evolve-block"
    child = apply_patch(PROGRAM.replace("# EVOLVE", "# evolve"), patch)
    assert "    return x + 2\n" in child.code


def test_blocks_apply_in_order_to_the_evolving_text() -> None:
    reply = block("    return logcnt\n", "    logcnt = logcnt * 1\n    return logcnt\n") + block(
        "    logcnt = logcnt * 1\n", "    logcnt = logcnt * 2\n"
    )
    child = apply_patch(PROGRAM, reply)
    assert "    logcnt = logcnt * 2\n    return logcnt\n" in child.code


def test_ambiguous_names_every_line() -> None:
    err = rejected(PROGRAM, block("    n, m = weight.shape\n", "    n, m = weight.size()\n"))
    assert err.kind == "ambiguous" and err.block == 1
    assert "matches 2 places, at lines 6 and 21" in str(err)


def test_whitespace_tolerant_match_is_still_unique() -> None:
    program = "def f():\n    x = 1\n\n\ndef g():\n        x = 1\n"
    err = rejected(program, block("x = 1\n", "x = 2\n"), entry_function=None)
    assert err.kind == "ambiguous" and "ignoring indentation" in str(err) and "lines 2 and 6" in str(err)


def test_no_match_shows_closest_region_as_diff() -> None:
    err = rejected(PROGRAM,
                   block("    for _ in range(m, num_phy + 1):\n"
                         "        hottest = (weight / logcnt).max(dim=-1).indices\n", "    pass\n"))
    assert err.kind == "no-match"
    assert "first SEARCH line 'for _ in range(m, num_phy + 1):'" in str(err)
    assert "closest is lines 8-9 (1 of its 2 non-blank lines appear there)" in str(err)
    assert "-    for _ in range(m, num_phy + 1):\n+    for _ in range(m, num_phy):" in err.detail
    assert err.detail in err.feedback()


def test_reindented_replace_keeps_relative_indentation() -> None:
    search = "for _ in range(m, num_phy):\n    hottest = (weight / logcnt).max(dim=-1).indices\n"
    replace = "for _ in range(m, num_phy):\n    if m:\n        hottest = (weight / logcnt).max(dim=-1).indices\n"
    child = apply_patch(PROGRAM, block(search, replace))
    assert "    for _ in range(m, num_phy):\n        if m:\n            hottest = (weight" in child.code
    assert child.notes == ["block 1 matched line 8 after re-indenting by +4 spaces"]


def test_outside_evolve_block_is_rejected_and_parent_untouched() -> None:
    err = rejected(PROGRAM, block("def helper(x):\n    return x + 1\n", "def helper(x):\n    return x + 2\n"))
    assert err.kind == "outside-evolve-block" and err.block == 1
    assert "changes line 16 ('return x + 1')" in str(err)
    assert "-    return x + 1\n+    return x + 2" in err.detail


def test_adding_code_after_an_end_marker_is_rejected() -> None:
    search = "    return logcnt\n# EVOLVE-BLOCK-END\n"
    err = rejected(PROGRAM, block(search, search + "GLOBAL = 1\n"))
    assert err.kind == "outside-evolve-block" and "adds 'GLOBAL = 1'" in str(err)


def test_plain_start_marker_without_label_is_a_block() -> None:
    search = "    n, m = weight.shape\n    return (weight / logcnt).max(dim=-1).values\n"
    child = apply_patch(PROGRAM, block(search, "    return (weight / logcnt).amax(dim=-1)\n"))
    assert "def peak(weight, logcnt):\n    return (weight / logcnt).amax(dim=-1)\n# EVOLVE-BLOCK-END" in child.code


def test_crlf_parent_gives_crlf_child() -> None:
    parent = PROGRAM.replace("\n", "\r\n")
    child = apply_patch(parent, block("    return logcnt\n", "    return logcnt.clone()\n"))
    assert child.code == PROGRAM.replace("    return logcnt\n", "    return logcnt.clone()\n").replace("\n", "\r\n")


def test_mixed_line_endings_become_lf_with_a_note() -> None:
    child = apply_patch("x = 1\r\ny = 2\n", block("y = 2\n", "y = 3\n"), entry_function=None)
    assert child.code == "x = 1\ny = 3\n"
    assert child.notes == ["the parent mixes CRLF and LF line endings; the child uses LF throughout"]


def test_parent_without_final_newline() -> None:
    child = apply_patch("x = 1\ny = 2", block("y = 2\n", "y = 3\n"), entry_function=None)
    assert child.code == "x = 1\ny = 3"


def test_form_feed_and_unicode_line_separators_survive() -> None:
    parent = 's = "a\x0cb\u2028c"\nt = 1\n'
    child = apply_patch(parent, block("t = 1\n", "t = 2\n"), entry_function=None)
    assert child.code == 's = "a\x0cb\u2028c"\nt = 2\n'


def test_empty_program_takes_an_empty_search() -> None:
    child = apply_patch("", block("", "def rebalance_experts():\n    pass\n"))
    assert child.code == "def rebalance_experts():\n    pass\n"


def test_python_checks() -> None:
    broken = block("    return logcnt\n", "    return logcnt)\n")
    err = rejected(PROGRAM, broken)
    assert err.kind == "syntax" and err.block == 1 and "line 11 (written by block 1)" in str(err)
    outside = block("    return logcnt\n", "return 1\n")
    assert rejected(PROGRAM, outside).kind == "syntax"  # 'return' outside function is caught by compile
    child = apply_patch("x = 1\n", block("x = 1\n", "x = (\n"), check_python=False)
    assert child.code == "x = (\n"
    child = apply_patch("x = 1\n", block("x = 1\n", "x = 2\n"), entry_function=None)
    assert child.code == "x = 2\n"
    assert rejected("x = 1\n", block("x = 1\n", "x = 2\n")).kind == "missing-entry"
    mentioned = rejected("x = 1\n", block("x = 1\n", "x = obj.rebalance_experts(rebalance_experts)\n"))
    assert mentioned.kind == "missing-entry"  # used, never bound
    wrapped = ("try:\n    from fast import rebalance_experts\nexcept ImportError:\n"
               "    def rebalance_experts():\n        pass\n")
    assert apply_patch(wrapped, block("        pass\n", "        return 1\n")).code.endswith("return 1\n")


# ------------------------------------------------------------------------------------------ rewrites


def test_rewrite_keeping_frozen_code_is_taken_as_is() -> None:
    new = PROGRAM.replace("argmax", "x").replace("    return logcnt\n", "    return logcnt * 1\n")
    child = apply_patch(PROGRAM, f"<CODE>\n```python\n{new}```\n</CODE>\n")
    assert child.code == new and child.notes == []


def test_rewrite_with_cosmetic_frozen_changes_is_spliced() -> None:
    new = PROGRAM.replace("    return logcnt\n", "    return logcnt * 1\n")
    cosmetic = new.replace("def helper(x):\n", "# helper\ndef helper(x):   \n").replace("START replication", "START")
    child = apply_patch(PROGRAM, f"```python\n{cosmetic}```\n")
    assert child.code == new
    assert "took the bodies of its EVOLVE blocks" in child.notes[0]


def test_rewrite_changing_frozen_code_names_the_line() -> None:
    changed = PROGRAM.replace("return x + 1", "return x + 2")
    err = rejected(PROGRAM, f"```python\n{changed}```\n")
    assert err.kind == "outside-evolve-block"
    assert "changes line 16 ('return x + 1', became rewrite line 16: 'return x + 2')" in str(err)


def test_identical_rewrite_is_no_change() -> None:
    assert rejected(PROGRAM, f"```python\n{PROGRAM}```\n").kind == "no-change"


# ----------------------------------------------------------------------------------------- PatchError


def test_patch_error_is_a_user_error_with_feedback() -> None:
    err = rejected(PROGRAM, block("nothing like this\n", "x\n") + block("nor this\n", "y\n"))
    assert isinstance(err, UserError)
    assert [e.block for e in err.errors] == [1, 2]
    feedback = err.feedback()
    assert "block 1: SEARCH text not found" in feedback and "block 2: SEARCH text not found" in feedback


# ------------------------------------------------------------------------------------------ make_patch


def search_parts(text: str) -> list[str]:
    return [b.search for b in parse_patch(text).blocks]


def test_make_patch_grows_context_until_unique() -> None:
    old = "a = 0\nx = 1\nb = 0\nx = 1\nc = 0\n"
    new = old.replace("b = 0\nx = 1\n", "b = 0\nx = 2\n")
    text = make_patch(old, new, name="bump", description="Bump x.")
    assert search_parts(text) in (["b = 0\nx = 1\n"], ["x = 1\nc = 0\n"])
    patch = parse_patch(text)
    assert (patch.name, patch.description) == ("bump", "Bump x.")
    assert apply_patch(old, text, entry_function=None).code == new


def test_make_patch_of_a_one_line_edit_in_the_seed_is_one_line() -> None:
    seed = (REPO / "candidates/seed.py").read_text(encoding="utf-8")
    line = "        hottest = (weight / logcnt).max(dim=-1).indices\n"
    if seed.count(line) != 1:
        pytest.skip("the seed program changed")
    new = seed.replace(line, "        hottest = (weight / logcnt).argmax(dim=-1)\n")
    text = make_patch(seed, new)
    assert search_parts(text) == [line]
    assert apply_patch(seed, text).code == new


def test_make_patch_insertion_gets_one_context_line() -> None:
    old = "a = 1\nb = 2\n"
    text = make_patch(old, "a = 1\nz = 0\nb = 2\n")
    assert len(search_parts(text)) == 1 and len(search_parts(text)[0].split("\n")) == 2
    assert apply_patch(old, text, entry_function=None).code == "a = 1\nz = 0\nb = 2\n"


def test_make_patch_falls_back_to_code_when_blocks_cannot_say_it() -> None:
    old = 'x = """\nA\n"""\n'
    new = 'x = """\n<<<<<<< SEARCH\n"""\n'
    text = make_patch(old, new)
    assert "<CODE>" in text and "<DIFF>" not in text
    assert apply_patch(old, text, entry_function=None).code == new
    assert parse_patch(make_patch("", "x = 1\n")).full_code == "x = 1\n"


def test_make_patch_of_identical_programs_is_an_error() -> None:
    with pytest.raises(PatchError) as info:
        make_patch("x = 1\n", "x = 1\n")
    assert info.value.kind == "no-change"


LINES = st.sampled_from(
    [
        "x = 1",
        "x = 1",
        "y = x + 1",
        "",
        "",
        "    return x",
        "    pass",
        "def f():",
        "# comment",
        "x = 1   ",
        "\tz = 2",
        "=======",
        "    =======",
        "<<<<<<< SEARCH",
        ">>>>>>> REPLACE",
        "```",
        "```python",
        "<DIFF>",
        "</DIFF>",
        "<CODE>",
        "</CODE>",
        "<NAME>",
        "s = 'é✓ 负载'",
        "  ",
    ]
)


@st.composite
def edited_programs(draw: st.DrawFn, lines: st.SearchStrategy[str], min_size: int = 0) -> tuple[list[str], list[str]]:
    """A program as lines and a copy changed by a few random inserts, deletes and replacements."""
    old = draw(st.lists(lines, min_size=min_size, max_size=30))
    new = list(old)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["insert", "delete", "replace"]))
        if op == "insert" or not new:
            new.insert(draw(st.integers(0, len(new))), draw(lines))
        elif op == "delete":
            del new[draw(st.integers(0, len(new) - 1))]
        else:
            new[draw(st.integers(0, len(new) - 1))] = draw(lines)
    return old, new


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edited_programs(LINES))
def test_make_patch_round_trips(programs: tuple[list[str], list[str]]) -> None:
    old_lines, new_lines = programs
    old, new = "".join(line + "\n" for line in old_lines), "".join(line + "\n" for line in new_lines)
    assume(old != new and new.strip())
    child = apply_patch(old, make_patch(old, new), entry_function=None, check_python=False)
    assert child.code == new


BODY = st.sampled_from(["    total += 1", "    total += 1", "    total = total * 2", "    x = total", "    # note", ""])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edited_programs(BODY, min_size=1))
def test_make_patch_round_trips_inside_an_evolve_block(programs: tuple[list[str], list[str]]) -> None:
    head = ["import math", "", "", "def f():", "    total = 0", "    # EVOLVE-BLOCK-START body"]
    tail = ["    # EVOLVE-BLOCK-END", "    return total", "", "", "def g():", "    total = 0", "    return total"]
    old = "".join(line + "\n" for line in head + programs[0] + tail)
    new = "".join(line + "\n" for line in head + programs[1] + tail)
    assume(old != new)
    child = apply_patch(old, make_patch(old, new), entry_function="f")
    assert child.code == new
    assert len(evolve_blocks(child.code)) == 1


# ------------------------------------------------------------------------------------------------ CLI


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="eplb-evolve")
    register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_apply_writes_child_and_prints_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "p.py").write_text(PROGRAM)
    (tmp_path / "patch.txt").write_text("<NAME>\nclone\n</NAME>\n"
                                        + block("    return logcnt\n", "    return logcnt.clone()\n"))
    assert run_cli(["apply", str(tmp_path / "patch.txt"), str(tmp_path / "p.py"), "-o", str(tmp_path / "c.py")]) == 0
    assert (tmp_path / "c.py").read_text() == PROGRAM.replace("return logcnt\n", "return logcnt.clone()\n")
    out = capsys.readouterr().out
    assert "applied patch 'clone'" in out and "+1 -1 lines" in out


def test_cli_apply_error_prints_detail_and_raises(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "p.py").write_text(PROGRAM)
    (tmp_path / "patch.txt").write_text(block("    return logcnt + 1\n", "    return 0\n"))
    with pytest.raises(PatchError) as info:
        run_cli(["apply", str(tmp_path / "patch.txt"), str(tmp_path / "p.py"), "-o", str(tmp_path / "c.py")])
    assert info.value.kind == "no-match"
    assert "+    return logcnt" in capsys.readouterr().err
    assert not (tmp_path / "c.py").exists()
    with pytest.raises(UserError, match="cannot read"):
        run_cli(["apply", str(tmp_path / "missing.txt"), str(tmp_path / "p.py")])


def test_cli_diff_then_apply(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    new = PROGRAM.replace("    return logcnt\n", "    return logcnt.clone()\n")
    (tmp_path / "a.py").write_text(PROGRAM)
    (tmp_path / "b-v2.py").write_text(new)
    assert run_cli(["diff", str(tmp_path / "a.py"), str(tmp_path / "b-v2.py"), "-o", str(tmp_path / "d.txt")]) == 0
    text = (tmp_path / "d.txt").read_text()
    assert parse_patch(text).name == "b_v2"
    assert search_parts(text) == ["    return logcnt\n"]
    assert run_cli(["apply", str(tmp_path / "d.txt"), str(tmp_path / "a.py")]) == 0
    assert capsys.readouterr().out.endswith(new)


@pytest.mark.skipif(importlib.util.find_spec("evaluator.evaluate_cli") is None, reason="evaluator CLI not present")
def test_main_cli_reports_patch_errors_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from evolve.cli import main

    (tmp_path / "p.py").write_text(PROGRAM)
    (tmp_path / "patch.txt").write_text("no patch here\n")
    assert main(["apply", str(tmp_path / "patch.txt"), str(tmp_path / "p.py")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: the reply holds no SEARCH/REPLACE block")
