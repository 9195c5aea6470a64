"""The offline mutator: a proposer with no model behind it, so a campaign searches for real with no endpoint.

It edits the parent's EVOLVE blocks with one operator from a small catalogue, writes the edit as a patch
in the harness's format (`evolve.patch.make_patch`) and applies it through the same engine an LLM's reply
goes through (`evolve.patch.apply_patch`), so it gets no shortcut. Operators (documented in docs/campaigns.md):

- `replace`: swap one block for another implementation of the same step from the catalogue
  (the task supplies it: for EPLB, `evaluator.mutations`);
- `replace2`: the same for two blocks at once, to reach combinations one step cannot;
- `perturb`: nudge one tunable constant (`NAME = number  # range [lo, hi]`) inside a block;
- `crossover`: take one block from an inspiration, when it defines the same public functions;
- `speedup`: swap one block for a catalogue implementation of a lower cost class (the catalogue marks
  each entry: 0 = no Python loop, 1 = a loop over a few rounds or search steps, 2 = a loop over items,
  slots or many steps, or the work done twice; a block the catalogue does not know counts as 2 when it
  has a Python loop, else 0), preferring the cheapest, so a campaign also moves toward faster programs.

`max_cost` (default 0) caps the cost class of every child: operators draw only catalogue entries within
it, and any other block of the child above it (the seed's own loops, or a block taken from an
inspiration) is swapped in the same edit for an entry within it. By default, then, every program the
search evaluates after the seed runs its catalogued blocks without a Python loop. A speed-aware objective
measures speed coarsely (and noisily on a busy machine), so without the cap a campaign settles on slower
entries whose small gain in balance on the search data is noise (docs/search.md has the figures). Raise
it to search the slower entries too.

Everything random comes from `random.Random` seeded with `request.seed`: the same request gives
byte-identical patch text.
"""
from __future__ import annotations

import ast
import functools
import math
import random
import re
import textwrap
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from evolve import syntax
from evolve.errors import UserError
from evolve.patch import EvolveBlock, PatchError, apply_patch, evolve_blocks, make_patch
from evolve.proposers.base import Proposal, ProposalRequest

DEFAULT_WEIGHTS: dict[str, float] = {"replace": 4.0, "perturb": 3.0, "crossover": 2.0, "replace2": 1.0, "speedup": 2.0}
OPERATORS = tuple(DEFAULT_WEIGHTS)

_PARAM_RE = re.compile(
    r"^(?P<name>[A-Z][A-Z0-9_]*)(?P<eq>\s*=\s*)"
    r"(?P<value>[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?)(?P<rest>\s*(?:#.*)?)$"
)
_RANGE_RE = re.compile(r"range\s*\[\s*([-+]?[\d.]+(?:[eE][-+]?\d+)?)\s*,\s*([-+]?[\d.]+(?:[eE][-+]?\d+)?)\s*\]")

@dataclass(frozen=True)
class BlockImpl:
    """One implementation of one EVOLVE block."""

    label: str  # the EVOLVE block it fills
    key: str  # short id used in patch names, e.g. "ldm+swap"
    summary: str  # one sentence for patch descriptions and the docs
    body: str  # the block body, ending with a newline
    params: tuple[str, ...] = field(default=())  # names of the tunable constants it defines
    cost: int = 0  # cost class: 0 no Python loop, 1 a loop over a few rounds or steps, 2 over items, slots or more


@dataclass
class Edit:
    """One mutation: the new program text and how to describe it."""

    code: str
    operator: str
    name: str
    description: str
    blocks: list[str]
    capped: list[str] = field(default_factory=list)  # blocks swapped to keep the child within max_cost


def _block_edit(code: str, index: int, body: str, operator: str, name: str, description: str, label: str) -> Edit:
    """An edit that replaces one EVOLVE block's body; the description ends naming the operator."""
    return Edit(set_body(code, index, body), operator, _slug(name), f"{description} [offline mutator: {operator}]",
                [label])


@dataclass
class Param:
    """A tunable constant found in a block body."""

    block: int  # index into evolve_blocks(code)
    label: str
    line: int  # 0-based line inside the body
    name: str
    value: str
    lo: float | None
    hi: float | None


# --------------------------------------------------------------------------------------------------
# text helpers


def set_body(code: str, index: int, body: str) -> str:
    """`code` with the body of its `index`-th EVOLVE block replaced (marker lines kept)."""
    block = evolve_blocks(code)[index]
    lines = code.split("\n")
    new = body[:-1] if body.endswith("\n") else body
    return "\n".join(lines[: block.start_line] + new.split("\n") + lines[block.end_line - 1 :])


def public_functions(body: str) -> set[str] | None:
    """Names of the public top-level functions a block defines; None when the body does not parse."""
    try:
        tree = syntax.parse(body)
    except SyntaxError:
        return None
    return {n.name for n in tree.body if isinstance(n, ast.FunctionDef) and not n.name.startswith("_")}


LOOPS = (ast.For, ast.AsyncFor, ast.While, ast.comprehension)
MAX_COST = 2  # the highest cost class


@functools.lru_cache(maxsize=4096)  # asked of every block of every parent and child: parse each body once
def body_cost(body: str) -> int:
    """Cost class of a block body the catalogue does not know: 0 without a Python loop, else the highest
    class (an unknown loop may run over items or slots). A body that does not parse counts as the highest."""
    try:
        tree = syntax.parse(textwrap.dedent(body))  # a block may be an indented fragment
    except (SyntaxError, ValueError):
        return MAX_COST
    return MAX_COST if any(isinstance(node, LOOPS) for node in ast.walk(tree)) else 0


def _entry_cost(entry: Any) -> int:
    """A catalogue entry's cost class: its mark, or for a bare code text (a task may give those) its inferred one."""
    return entry.cost if isinstance(entry, BlockImpl) else body_cost(str(entry))


def find_params(blocks: Sequence[EvolveBlock]) -> list[Param]:
    out = []
    for i, block in enumerate(blocks):
        for j, line in enumerate(block.body.split("\n")):
            m = _PARAM_RE.match(line)
            if not m:
                continue
            r = _RANGE_RE.search(m.group("rest"))
            lo, hi = (float(r.group(1)), float(r.group(2))) if r else (None, None)
            out.append(Param(i, block.label, j, m.group("name"), m.group("value"), lo, hi))
    return out


def _is_int(text: str) -> bool:
    return not any(c in text for c in ".eE")


def _format_float(x: float) -> str:
    text = repr(float(f"{x:.4g}"))
    return text if any(c in text for c in ".eEn") else text + ".0"


def new_value(param: Param, rng: random.Random) -> str | None:
    """A nearby value for the constant, within its range; None when no different value was found."""
    old = float(param.value)
    lo = param.lo if param.lo is not None else (0.0 if old >= 0 else -math.inf)
    hi = param.hi if param.hi is not None else math.inf
    for _ in range(8):
        if _is_int(param.value):
            step = max(1, round(abs(old) * rng.uniform(0.1, 0.5))) * rng.choice((-1, 1))
            text = str(int(min(max(old + step, lo), hi)))
        else:
            if param.lo is not None and param.hi is not None:
                x = old + rng.gauss(0.0, 0.2 * (hi - lo))
            else:
                x = old * math.exp(rng.gauss(0.0, 0.4)) if old != 0 else rng.uniform(0.01, 0.2)
            text = _format_float(min(max(x, lo), hi))
        if float(text) != old:
            return text
    return None


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower() or "edit"


# --------------------------------------------------------------------------------------------------
# the proposer


class OfflineMutator:
    """Catalogue-driven mutations of the parent's EVOLVE blocks.

    `weights` sets how often each operator is drawn (missing ones keep their default; 0 disables one);
    `catalogue` maps block labels to implementations; the task supplies it (`Task.mutation_catalogue()`).
    Without one only `perturb` and `crossover` have anything to do. `max_cost` keeps only the catalogue
    entries of that cost class or lower (default 0: loop-free ones; `MAX_COST`: all).
    """

    name = "mutator"

    def __init__(
        self,
        weights: Mapping[str, float] | None = None,
        catalogue: Mapping[str, Sequence[BlockImpl]] | None = None,
        max_cost: int = 0,
    ) -> None:
        unknown = set(weights or {}) - set(OPERATORS)
        if unknown:
            raise UserError(f"unknown mutator operator(s) {sorted(unknown)}; known: {', '.join(OPERATORS)}")
        if isinstance(max_cost, bool) or not isinstance(max_cost, int) or not 0 <= max_cost <= MAX_COST:
            raise UserError(f"proposer.options.max_cost must be a whole number from 0 to {MAX_COST}, got "
                            f"{max_cost!r}")
        self.weights = {**DEFAULT_WEIGHTS, **(weights or {})}
        self.max_cost = max_cost
        given = dict(catalogue or {})
        self.catalogue = {k: [impl for impl in v if _entry_cost(impl) <= max_cost] for k, v in given.items()}
        self.costs = {(k, getattr(impl, "body", impl)): _entry_cost(impl) for k, v in given.items() for impl in v}

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | None) -> "OfflineMutator":
        """From the campaign's free `[proposer.options]` table: `weights = {replace = 4, ...}`, `max_cost = 1`."""
        options = dict(options or {})
        weights = options.pop("weights", None)
        max_cost = options.pop("max_cost", 0)
        if options:
            raise UserError(f"unknown mutator option(s) {sorted(options)}; known: weights, max_cost")
        return cls(weights=weights, max_cost=max_cost)

    # ---- the interface -------------------------------------------------------------------------------
    def propose(self, request: ProposalRequest) -> Proposal:
        proposal = Proposal(proposer=self.name, model="offline-mutator")
        code = request.parent.code.replace("\r\n", "\n")
        try:
            edit = self.mutate(code, request)
        except PatchError as exc:
            proposal.error = f"mutator: the parent's EVOLVE blocks are unreadable: {exc}"
            return proposal
        if edit is None:
            proposal.error = "mutator: no operator applies to this parent (no EVOLVE block it knows or can tune)"
            return proposal
        proposal.extra.update(operator=edit.operator, blocks=edit.blocks, capped=edit.capped)
        try:
            text = make_patch(code, edit.code, name=edit.name, description=edit.description)
            child = apply_patch(request.parent.code, text, entry_function=request.entry_function)
        except PatchError as exc:
            proposal.error = f"mutator ({edit.operator}): {exc}"
            return proposal
        proposal.patch_text = text
        proposal.child_code = child.code
        proposal.name, proposal.description, proposal.diff = child.name, child.description, child.diff
        return proposal

    # ---- choosing an edit ----------------------------------------------------------------------------
    def mutate(self, code: str, request: ProposalRequest) -> Edit | None:
        """One edit of `code`, or None when no operator applies. Deterministic in `request.seed`."""
        rng = random.Random(f"mutator:{request.seed}")
        blocks = evolve_blocks(code)
        if not blocks:
            return None
        ops = [op for op in OPERATORS if self.weights.get(op, 0) > 0]
        while ops:
            op = rng.choices(ops, weights=[self.weights[o] for o in ops], k=1)[0]
            edit = getattr(self, f"_op_{op}")(code, blocks, request, rng)
            if edit is not None:
                edit = self._within_cap(edit, rng)
                if edit.code != code:
                    return edit
            ops.remove(op)
        return None

    def cost(self, block: EvolveBlock) -> int:
        """The block's cost class: the catalogue's mark for a catalogue entry, else inferred (`body_cost`)."""
        return self.costs.get((block.label, block.body), body_cost(block.body))

    def _within_cap(self, edit: Edit, rng: random.Random) -> Edit:
        """`edit` with every block above `max_cost` that the catalogue can replace swapped for an entry within
        the cap (the cheapest class first), so no child carries a slower block than the cap allows."""
        blocks = evolve_blocks(edit.code)
        code, swapped = edit.code, []
        for index in reversed(range(len(blocks))):  # later blocks first: earlier line numbers stay valid
            block, options = blocks[index], self.catalogue.get(blocks[index].label, [])
            if not options or self.cost(block) <= self.max_cost:
                continue
            lowest = min(impl.cost for impl in options)
            impl = rng.choice([impl for impl in options if impl.cost == lowest])
            code = set_body(code, index, impl.body)
            swapped.insert(0, f"{block.label} -> '{impl.key}'")
            edit.capped.insert(0, block.label)
        if not swapped:
            return edit
        edit.code = code
        edit.description = edit.description.replace(
            " [offline mutator:", f" Also, to keep every block within cost class {self.max_cost}: {'; '.join(swapped)}."
            " [offline mutator:", 1)
        return edit

    def _current_key(self, block: EvolveBlock) -> str:
        for impl in self.catalogue.get(block.label, []):
            if impl.body == block.body:
                return impl.key
        return "custom"

    def _replacements(self, blocks: list[EvolveBlock]) -> list[tuple[int, list[BlockImpl]]]:
        out = []
        for i, block in enumerate(blocks):
            options = [impl for impl in self.catalogue.get(block.label, []) if impl.body != block.body]
            if options:
                out.append((i, options))
        return out

    def _op_replace(self, code: str, blocks: list[EvolveBlock], request: ProposalRequest,
                    rng: random.Random) -> Edit | None:
        choices = self._replacements(blocks)
        if not choices:
            return None
        index, options = rng.choice(choices)
        impl = rng.choice(options)
        block = blocks[index]
        return _block_edit(
            code, index, impl.body, "replace", f"{block.label}_{impl.key}",
            f"Replace the {block.label} block (was: {self._current_key(block)}) with '{impl.key}': {impl.summary}.",
            block.label,
        )

    def _op_speedup(self, code: str, blocks: list[EvolveBlock], request: ProposalRequest,
                    rng: random.Random) -> Edit | None:
        """A block whose implementation is slower than another of the catalogue's, swapped for a cheaper one."""
        choices = []
        for i, block in enumerate(blocks):
            known = next((impl for impl in self.catalogue.get(block.label, []) if impl.body == block.body), None)
            key, cost = (known.key, known.cost) if known is not None else ("custom", self.cost(block))
            cheaper = [impl for impl in self.catalogue.get(block.label, []) if impl.cost < cost]
            if cheaper:
                lowest = min(impl.cost for impl in cheaper)
                choices.append((i, key, cost, [impl for impl in cheaper if impl.cost == lowest]))
        if not choices:
            return None
        index, key, cost, options = rng.choice(choices)
        impl = rng.choice(options)
        block = blocks[index]
        return _block_edit(
            code, index, impl.body, "speedup", f"faster_{block.label}_{impl.key}",
            f"Make the {block.label} block faster: '{key}' (cost class {cost}) becomes '{impl.key}' "
            f"(cost class {impl.cost}): {impl.summary}.",
            block.label,
        )

    def _op_replace2(self, code: str, blocks: list[EvolveBlock], request: ProposalRequest,
                     rng: random.Random) -> Edit | None:
        choices = self._replacements(blocks)
        if len(choices) < 2:
            return None
        picked = sorted(rng.sample(range(len(choices)), 2))
        new_code, parts, labels = code, [], []
        for k in reversed(picked):  # later blocks first, so earlier line numbers stay valid
            index, options = choices[k]
            impl = rng.choice(options)
            new_code = set_body(new_code, index, impl.body)
            parts.insert(0, (blocks[index], impl))
            labels.insert(0, blocks[index].label)
        name = "_".join(_slug(f"{b.label}_{impl.key}") for b, impl in parts)
        what = "; ".join(
            f"{b.label} (was: {self._current_key(b)}) -> '{impl.key}': {impl.summary}" for b, impl in parts
        )
        return Edit(new_code, "replace2", name, f"Replace two blocks: {what}. [offline mutator: replace2]", labels)

    def _op_perturb(self, code: str, blocks: list[EvolveBlock], request: ProposalRequest,
                    rng: random.Random) -> Edit | None:
        params = find_params(blocks)
        rng.shuffle(params)
        for param in params:
            value = new_value(param, rng)
            if value is None:
                continue
            lines = blocks[param.block].body.split("\n")
            m = _PARAM_RE.match(lines[param.line])
            assert m is not None
            lines[param.line] = f"{m.group('name')}{m.group('eq')}{value}{m.group('rest')}"
            bounds = f" (range [{param.lo:g}, {param.hi:g}])" if param.lo is not None and param.hi is not None else ""
            return _block_edit(
                code, param.block, "\n".join(lines), "perturb", f"tune_{param.name}_{value}",
                f"Set {param.name} in the {param.label} block from {param.value} to {value}{bounds}.",
                param.label,
            )
        return None

    def _op_crossover(self, code: str, blocks: list[EvolveBlock], request: ProposalRequest,
                      rng: random.Random) -> Edit | None:
        candidates: list[tuple[int, EvolveBlock, str]] = []
        own = {b.label: (i, b) for i, b in enumerate(blocks)}
        for view in request.inspirations:
            try:
                theirs = evolve_blocks(view.code.replace("\r\n", "\n"))
            except PatchError:
                continue
            for block in theirs:
                if block.label not in own:
                    continue
                index, mine = own[block.label]
                if block.body == mine.body or (self.catalogue.get(block.label) and self.cost(block) > self.max_cost):
                    continue  # nothing new, or a block the cap would swap out again
                needed, offered = public_functions(mine.body), public_functions(block.body)
                if offered is None or (needed is not None and not needed <= offered):
                    continue  # it would leave the frozen code calling a function that no longer exists
                candidates.append((index, block, view.id))
        if not candidates:
            return None
        index, block, source = rng.choice(candidates)
        return _block_edit(
            code, index, block.body, "crossover", f"crossover_{block.label}_from_{source[:8]}",
            f"Take the {block.label} block from program {source[:12]} (an inspiration) and keep the parent's other "
            "blocks.",
            block.label,
        )


MutatorProposer = OfflineMutator  # the name evolve.proposers.factory looks up
