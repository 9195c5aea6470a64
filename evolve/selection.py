"""Selection: islands of elites, parent and inspiration draws, Pareto ranking, migration and novelty.

Strategy (documented because lineage depends on it):
- Each island keeps at most `elite_size` programs. With one objective they are the best by score (ties:
  the earlier program). With several objectives they are filled front by front (non-dominated sorting);
  the last front that does not fit is cut by crowding distance, so the kept front stays spread out.
- Parents come from the island's elites, ordered best first (front, then primary objective). Strategy
  `rank` weights the elite at position r by 1 / (r + 1); `uniform` weights all alike; `greedy` always takes
  the first. Under `rank` and `uniform` the weight is divided by 1 + penalty * (children so far), so a
  parent that has been tried often yields to its neighbours.
- Inspirations: the best program overall (if it is not the parent), then programs from every island's
  elites that are least similar to the parent's code, drawn from a small random pool.
- MAP-Elites (optional, `grid`): instead of an elite list, each island keeps a grid of feature cells
  (a metric divided by its bin width, rounded down, for each feature the config names) holding the best
  program of each cell; parents are drawn from the occupied cells ranked by the primary objective, so
  programs unlike the best (faster but less balanced, say) keep a place to breed from.
- Migration (ring): every `migration_interval` proposals each island sends its top `migrants` elites to
  the next island.
- Novelty: a child whose normalised code (comments, docstrings and spacing removed) is identical to any
  program that was ever on the island, or whose similarity to one of the island's elites reaches the
  threshold, is rejected before evaluation. With `structural` novelty (the default) so is a child whose
  syntax tree equals an island program's once identifiers are renamed in order of first use and
  docstrings dropped: renamed variables, reordered blank lines and reworded comments are no new program,
  while a changed constant or operator is.

Everything here is a pure function of the order in which programs arrive and of the `random.Random`
passed in, so a replay of the archive's steps rebuilds the same state. Objectives marked
`deterministic=False` (wall-clock runtime) differ between runs. As secondary (Pareto) objectives they
are bucketed to half-octaves when `bucket_noisy` is set, and lineage is then reproducible only up to
timing noise that crosses a bucket edge; a non-deterministic primary objective (a scorer that includes
time) is never bucketed and makes lineage reproducible only up to timing noise. With one deterministic
objective, selection is fully deterministic.
"""
from __future__ import annotations

import ast
import difflib
import functools
import hashlib
import io
import math
import random
import re
import tokenize
from collections import Counter
from dataclasses import dataclass, field

from evolve import syntax
from evolve.task import Objective, Result

STRATEGIES = ("rank", "uniform", "greedy")


# ---- fitness -------------------------------------------------------------------------------------------
def half_octave(value: float) -> float:
    """Round |value| to the nearest power of sqrt(2), keeping the sign: 1.3 ms and 1.4 ms rank alike."""
    if value == 0:
        return 0.0
    return math.copysign(2 ** (round(2 * math.log2(abs(value))) / 2), value)


def fitness(result: Result, objectives: list[Objective], bucket_noisy: bool = True) -> tuple[float, ...] | None:
    """Objective values, each oriented so that higher is better; None if the program cannot be ranked.

    Only secondary objectives are bucketed: a raw runtime is, but the primary objective may be a composite
    score where rounding to half-octaves would erase the differences that matter."""
    values = []
    for i, objective in enumerate(objectives):
        v = objective.value(result)
        if v is None or not math.isfinite(v):
            return None
        values.append(half_octave(v) if i and bucket_noisy and not objective.deterministic else v)
    return tuple(values)


def dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))


def pareto_ranks(points: list[tuple[float, ...]]) -> list[int]:
    """Front index of each point (0 = non-dominated), by repeated peeling of the non-dominated set."""
    ranks = [-1] * len(points)
    remaining = set(range(len(points)))
    front = 0
    while remaining:
        current = {i for i in remaining if not any(dominates(points[j], points[i]) for j in remaining if j != i)}
        for i in current:
            ranks[i] = front
        remaining -= current
        front += 1
    return ranks


def crowding(points: list[tuple[float, ...]]) -> list[float]:
    """Crowding distance within one front: the extremes get infinity, crowded points get little."""
    n = len(points)
    distance = [0.0] * n
    if n <= 2:
        return [math.inf] * n
    for k in range(len(points[0])):
        order = sorted(range(n), key=lambda i: points[i][k])
        span = points[order[-1]][k] - points[order[0]][k]
        distance[order[0]] = distance[order[-1]] = math.inf
        if span <= 0:
            continue
        for a, i, b in zip(order, order[1:], order[2:]):
            distance[i] += (points[b][k] - points[a][k]) / span
    return distance


# ---- code similarity -------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1024)  # a proposal's code is normalised when it arrives and again when it is placed
def normalise(code: str) -> str:
    """Code without comments, docstrings or layout, keeping block structure: one statement per line."""
    lines: list[str] = []
    current: list[str] = []
    previous = tokenize.NEWLINE
    pending: str | None = None  # a string that opens a statement: a docstring if the statement ends here
    try:
        for tok in tokenize.generate_tokens(io.StringIO(code).readline):
            kind = tok.type
            if kind in (tokenize.COMMENT, tokenize.NL, tokenize.ENCODING, tokenize.ENDMARKER):
                continue
            if pending is not None:
                if kind == tokenize.NEWLINE:
                    pending, previous = None, kind
                    continue
                current.append(pending)
                pending = None
            if kind == tokenize.STRING and previous in (tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT):
                pending, previous = tok.string, kind
                continue
            if kind == tokenize.NEWLINE:
                if current:
                    lines.append(" ".join(current))
                current = []
            elif kind in (tokenize.INDENT, tokenize.DEDENT):
                lines.append("{" if kind == tokenize.INDENT else "}")
            else:
                current.append(tok.string)
            previous = kind
    except (tokenize.TokenError, IndentationError, SyntaxError):
        stripped = (re.sub(r"#.*", "", line).strip() for line in code.splitlines())
        return "\n".join(" ".join(line.split()) for line in stripped if line)
    if current or pending:
        lines.append(" ".join(current + ([pending] if pending else [])))
    return "\n".join(lines)


def similarity(a: str, b: str, floor: float = 0.0) -> float:
    """difflib's ratio 2*M/T between two texts, computed line by line and then character by character
    inside changed lines (fast for near-identical programs). Below `floor` it may return any value below
    `floor` (an upper bound), which is all a threshold test needs."""
    if a == b:
        return 1.0
    total = len(a) + len(b)
    if total == 0:
        return 1.0
    la, lb = a.splitlines(keepends=True), b.splitlines(keepends=True)
    blocks = difflib.SequenceMatcher(None, la, lb, autojunk=False).get_opcodes()
    equal = sum(sum(len(x) for x in la[i1:i2]) for tag, i1, i2, _, _ in blocks if tag == "equal")
    changed = [("".join(la[i1:i2]), "".join(lb[j1:j2])) for tag, i1, i2, j1, j2 in blocks if tag != "equal"]
    bound = 2 * (equal + sum(min(len(x), len(y)) for x, y in changed)) / total
    if bound < floor:
        return bound
    inner = sum(
        sum(m.size for m in difflib.SequenceMatcher(None, x, y, autojunk=False).get_matching_blocks())
        for x, y in changed
        if x and y
    )
    return 2 * (equal + inner) / total


class _Canonical(ast.NodeTransformer):
    """Renames every identifier (variables, arguments, functions, classes) in order of first use and drops
    docstrings; attribute names, keywords and constants stay, since they change what the code does."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}

    def _rename(self, name: str) -> str:
        return self.names.setdefault(name, f"_{len(self.names)}")

    def visit_Name(self, node: ast.Name) -> ast.AST:
        node.id = self._rename(node.id)
        return node

    def visit_arg(self, node: ast.arg) -> ast.AST:
        node.arg = self._rename(node.arg)
        node.annotation = None
        return node

    def _definition(self, node: ast.AST) -> ast.AST:
        node.name = self._rename(node.name)  # type: ignore[attr-defined]
        body = node.body  # type: ignore[attr-defined]
        if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
                and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]  # type: ignore[attr-defined]
        if hasattr(node, "returns"):
            node.returns = None  # type: ignore[attr-defined]
        return self.generic_visit(node)

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _definition


@functools.lru_cache(maxsize=1024)  # checked for novelty on arrival, then recorded when placed: parse once
def structure_digest(code: str) -> str | None:
    """sha256 of the program's canonical syntax tree (see `_Canonical`); None when it does not parse."""
    try:
        tree = syntax.parse(code)
    except (SyntaxError, ValueError):
        return None
    first = tree.body[0] if tree.body else None
    if isinstance(first, ast.Expr) and isinstance(getattr(first, "value", None), ast.Constant):
        tree.body = tree.body[1:]  # the module docstring
    tree = _Canonical().visit(tree)
    return _digest(ast.dump(tree, annotate_fields=False, include_attributes=False))


def line_similarity(a: str, b: str) -> float:
    """A cheap similarity for diversity: the ratio over whole lines."""
    return difflib.SequenceMatcher(None, a.splitlines(), b.splitlines(), autojunk=False).ratio()


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# ---- the population --------------------------------------------------------------------------------------
@dataclass
class Member:
    """A correct program as selection sees it."""

    id: str
    fitness: tuple[float, ...]  # ranked values (noisy objectives bucketed)
    primary: float  # the first objective's exact value: what "best" means
    order: int  # the step that brought it into the archive (tie-break: earlier first)
    generation: int = 0
    cell: tuple[int, ...] | None = None  # MAP-Elites cell (None without a grid)


@dataclass
class Settings:
    islands: int = 2
    elite_size: int = 8
    strategy: str = "rank"
    children_penalty: float = 0.5
    pareto: bool = False
    grid: bool = False  # MAP-Elites: members carry a `cell`; one program per cell and island


def grid_cell(metrics: dict[str, float], widths: dict[str, float]) -> tuple[int, ...] | None:
    """The MAP-Elites cell of a program: floor(metric / width) for each feature; None if one is missing."""
    cell = []
    for key, width in widths.items():
        value = metrics.get(key)
        if value is None or not math.isfinite(value) or width <= 0:
            return None
        cell.append(math.floor(value / width + 1e-9))
    return tuple(cell)


@dataclass
class Population:
    """Islands of elites plus what novelty and the parent penalty remember."""

    settings: Settings
    elites: list[list[Member]] = field(default_factory=list)
    children: Counter = field(default_factory=Counter)
    normalised: dict[str, str] = field(default_factory=dict)  # program id -> normalised code
    seen: list[dict[str, int]] = field(default_factory=list)  # per island: normalised digest -> step it arrived
    shapes: list[dict[str, tuple[int, str]]] = field(default_factory=list)  # per island: tree digest -> (step, id)
    structure: dict[str, str | None] = field(default_factory=dict)  # program id -> canonical tree digest
    best: Member | None = None

    def __post_init__(self) -> None:
        self.elites = self.elites or [[] for _ in range(self.settings.islands)]
        self.seen = self.seen or [{} for _ in range(self.settings.islands)]
        self.shapes = self.shapes or [{} for _ in range(self.settings.islands)]

    # -- arrivals ------------------------------------------------------------------------------------
    def add(self, island: int, member: Member, code: str, step: int) -> bool:
        """Put a correct program on an island; returns whether it is among the island's elites."""
        norm = self.normalised.get(member.id)
        if norm is None:
            norm = self.normalised[member.id] = normalise(code)
        self.seen[island].setdefault(_digest(norm), step)
        if member.id not in self.structure and code:
            self.structure[member.id] = structure_digest(code)
        shape = self.structure.get(member.id)
        if shape is not None:
            self.shapes[island].setdefault(shape, (step, member.id))
        if self.best is None or member.primary > self.best.primary:
            self.best = member
        if any(m.id == member.id for m in self.elites[island]):
            return False
        if self.settings.grid:  # a program without the features shares one catch-all cell
            rival = next((m for m in self.elites[island] if m.cell == member.cell), None)
            if rival is not None and (rival.primary, -rival.order) >= (member.primary, -member.order):
                return False
            kept = [m for m in self.elites[island] if m is not rival] + [member]
            self.elites[island] = sorted(kept, key=lambda m: (-m.primary, m.order))
            return True
        kept = self._rank([*self.elites[island], member])[: self.settings.elite_size]
        self.elites[island] = kept
        return any(m.id == member.id for m in kept)

    def _rank(self, members: list[Member]) -> list[Member]:
        """Best first. With Pareto: by front, the overflowing front cut by crowding, then by primary."""
        if not self.settings.pareto:
            return sorted(members, key=lambda m: (-m.fitness[0], m.order))
        points = [m.fitness for m in members]
        ranks = pareto_ranks(points)
        keep: list[Member] = []
        for front in range(max(ranks) + 1):
            ids = [i for i, r in enumerate(ranks) if r == front]
            if len(keep) + len(ids) > self.settings.elite_size:
                dist = crowding([points[i] for i in ids])
                order = sorted(range(len(ids)),
                               key=lambda k: (-dist[k], -members[ids[k]].fitness[0], members[ids[k]].order))
                ids = [ids[k] for k in order[: self.settings.elite_size - len(keep)]]
            keep += sorted((members[i] for i in ids), key=lambda m: (-m.fitness[0], m.order))
            if len(keep) >= self.settings.elite_size:
                break
        return keep

    def migrate(self, count: int, step: int) -> list[tuple[str, int, int]]:
        """Ring migration: island i sends its top `count` elites to island i+1. Returns (id, from, to)."""
        n = len(self.elites)
        if n < 2:
            return []
        outgoing = [list(island[:count]) for island in self.elites]
        moves = []
        for src, members in enumerate(outgoing):
            dst = (src + 1) % n
            for m in members:
                if self.add(dst, m, "", step):  # its code is known: it arrived through add()
                    moves.append((m.id, src, dst))
        return moves

    # -- draws -----------------------------------------------------------------------------------
    def draw_parent(self, island: int, rng: random.Random) -> Member:
        elites = self.elites[island]
        if not elites:
            raise RuntimeError(f"island {island} has no programs")  # cannot happen: the seed is on every island
        if self.settings.strategy == "greedy":
            return elites[0]
        penalty = self.settings.children_penalty
        weights = [
            (1.0 / (r + 1) if self.settings.strategy == "rank" else 1.0) / (1.0 + penalty * self.children[m.id])
            for r, m in enumerate(elites)
        ]
        return rng.choices(elites, weights=weights)[0]

    def inspirations(self, parent: Member, count: int, rng: random.Random, pool_size: int = 6) -> list[Member]:
        """The best program (unless it is the parent), then the least similar of a random elite pool."""
        chosen: list[Member] = []
        if count <= 0:
            return chosen
        if self.best is not None and self.best.id != parent.id:
            chosen.append(self.best)
        pool: dict[str, Member] = {}
        for island in self.elites:
            for m in island:
                if m.id != parent.id and all(m.id != c.id for c in chosen):
                    pool.setdefault(m.id, m)
        candidates = sorted(pool.values(), key=lambda m: (m.order, m.id))
        candidates = rng.sample(candidates, min(pool_size, len(candidates)))
        base = self.normalised.get(parent.id, "")
        candidates.sort(key=lambda m: (line_similarity(base, self.normalised.get(m.id, "")), m.order))
        return (chosen + candidates)[:count]

    # -- novelty ---------------------------------------------------------------------------------
    def near_duplicate(
        self, code: str, island: int, against: list[str], upto_step: int, threshold: float, structural: bool = False
    ) -> tuple[str, float] | None:
        """(program id or '', similarity) if `code` is too close to the island as it stood at `upto_step`.

        `against` are the elite ids captured when the proposal was drawn, so the answer does not depend on
        results that arrived meanwhile."""
        norm = normalise(code)
        arrived = self.seen[island].get(_digest(norm))
        if arrived is not None and arrived <= upto_step:
            match = next((pid for pid in against if self.normalised.get(pid) == norm), "")
            return match, 1.0
        if structural:
            shape = structure_digest(code)
            hit = self.shapes[island].get(shape) if shape is not None else None
            if hit is not None and hit[0] <= upto_step:
                return hit[1], 1.0
        if threshold >= 1.0:
            return None
        for pid in against:
            ratio = similarity(norm, self.normalised.get(pid, ""), floor=threshold)
            if ratio >= threshold:
                return pid, ratio
        return None
