"""An adaptive model ensemble: each proposal goes to the model with the best record of improvements per
token, with an optimism bonus for models tried less.

Value of model m after n_m proposals that spent t_m thousand tokens and produced k_m children better than
their parent:  (k_m + 1) / (t_m + 1)  +  c * mean_value * sqrt(ln(N + 1) / (n_m + 1)),  N = all proposals.
Models not yet tried (nor awaiting an outcome) go first, in the configured order; ties go to a draw from
`random.Random` seeded by the proposal's seed. The state is a pure function of the observations, and the
campaign loop makes them in proposal order, so a rerun or a replay from the transcript picks the same
model for every proposal.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass


@dataclass
class Arm:
    name: str
    pulls: int = 0
    pending: int = 0  # chosen, outcome not yet observed (proposals overlap)
    improvements: int = 0
    ktokens: float = 0.0
    cost: float = 0.0

    def value(self) -> float:
        return (self.improvements + 1) / (self.ktokens + 1)


class ModelBandit:
    def __init__(self, names: list[str], exploration: float = 1.0) -> None:
        self.arms = {name: Arm(name) for name in names}
        self.order = list(names)
        self.exploration = exploration

    def choose(self, seed: int) -> str:
        untried = [n for n in self.order if self.arms[n].pulls + self.arms[n].pending == 0]
        if untried:
            self.arms[untried[0]].pending += 1
            return untried[0]
        total = sum(a.pulls for a in self.arms.values())
        mean = sum(a.value() for a in self.arms.values()) / len(self.arms)
        scores = {n: a.value() + self.exploration * mean * math.sqrt(math.log(total + 1) / (a.pulls + 1))
                  for n, a in self.arms.items()}
        top = max(scores.values())
        best = [n for n in self.order if scores[n] >= top * (1 - 1e-12)]
        name = best[0] if len(best) == 1 else random.Random(f"bandit:{seed}").choice(best)
        self.arms[name].pending += 1
        return name

    def observe(self, name: str, improved: bool, tokens: int, cost: float = 0.0) -> None:
        arm = self.arms.get(name)
        if arm is None:
            return  # a model no longer in the ensemble (a resumed run with another config)
        arm.pulls += 1
        arm.pending = max(0, arm.pending - 1)
        arm.improvements += int(improved)
        arm.ktokens += tokens / 1000
        arm.cost += cost

    def table(self) -> list[dict[str, float | str]]:
        return [{"model": a.name, "proposals": a.pulls, "improvements": a.improvements,
                 "ktokens": round(a.ktokens, 3), "value": round(a.value(), 6)} for a in self.arms.values()]
