"""How good are the offline mutator's children? Ratios of balancedness_gpu against the seed, same run.

1. Catalogue: each block implementation dropped into the seed, scored by the evaluator (predictive
   protocol: plan on window i, score on window i+1) on a simulated DeepSeek-V3 trace (58 layers x 256
   experts, R=288, 8 groups, 4 nodes, 32 GPUs). Prints balancedness_gpu relative to the seed, the
   evaluator's median runtime, and an in-process runtime ratio (best of `--repeat` calls, interleaved
   with the seed's calls, so a busy machine slows both alike).
2. One generation: `--children` mutator children of the seed (seeds 0..n-1): share valid, share better
   than the seed, best ratio.
3. A short hill climb: `--steps` proposals, each from the best program so far (with the two best as
   inspirations); prints the best ratio reached and the chain of patches that got there.

Run: `.venv/bin/python bench/bench_mutator.py [--trace-steps 1200] [--children 20] [--steps 30]`
The simulated trace is cached under .cache/ (generating it takes about a minute on a laptop CPU).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from evaluator.mutations import CATALOGUE  # noqa: E402
from evaluator.task import EplbTask, EvalOptions  # noqa: E402
from evaluator.traces import load_npz, save_npz  # noqa: E402
from evolve.patch import evolve_blocks  # noqa: E402
from evolve.proposers.base import ProgramView, ProposalRequest  # noqa: E402
from evolve.proposers.mutator import OfflineMutator, set_body  # noqa: E402

SEED = (REPO / "candidates" / "seed.py").read_text()


def trace_path(steps: int) -> Path:
    path = REPO / ".cache" / f"bench_mutator_deepseek-v3_{steps}.npz"
    if not path.exists():
        from evaluator.traces.generator import TraceParams, generate

        print(f"generating a {steps}-step DeepSeek-V3 trace (cached at {path}) ...", flush=True)
        save_npz(generate("deepseek-v3", TraceParams(steps=steps), progress=False), path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trace-steps", type=int, default=1200)
    parser.add_argument("--trace", default="", help="a .npz trace to use instead of the simulated one")
    parser.add_argument("--children", type=int, default=20)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=15, help="calls per program for the runtime ratio")
    args = parser.parse_args()

    path = Path(args.trace) if args.trace else trace_path(args.trace_steps)
    trace = load_npz(path)
    task = EplbTask(EvalOptions(dataset=str(path), reference_calls=1), trace=trace)
    print(f"trace {path.name}: {trace.counts.shape[0]} steps, {len(task.plan_windows)} scored window pairs, "
          f"R={task.args[0]}, groups={task.args[1]}, nodes={task.args[2]}, gpus={task.args[3]}")

    def score(code: str) -> tuple[float, float]:
        result = task.evaluate(code)
        if not result.correct:
            return float("nan"), float("nan")
        return result.metrics["balancedness_gpu"], result.metrics["runtime_median_s"]

    base_bal, base_rt = score(SEED)
    print(f"seed: balancedness_gpu {base_bal:.4f}, runtime {base_rt * 1e3:.2f} ms/call\n")

    # 1. the catalogue, one block at a time
    window = torch.from_numpy(task.plan_windows[0]).double()

    def load(code: str):
        namespace: dict = {}
        exec(compile(code, "<bench>", "exec"), namespace)
        return namespace["rebalance_experts"]

    def interleaved_ratio(code: str) -> float:
        """Best-of-n seconds per call of `code` over the seed's, calls alternating."""
        fns, best = (load(code), load(SEED)), [float("inf"), float("inf")]
        for _ in range(args.repeat):
            for i, fn in enumerate(fns):
                start = time.perf_counter()
                fn(window, *task.args)
                best[i] = min(best[i], time.perf_counter() - start)
        return best[0] / best[1]

    print(f"{'block':12} {'entry':24} {'bal_gpu':>8} {'ratio':>7} {'runtime':>9} {'rt ratio':>8}")
    labels = [b.label for b in evolve_blocks(SEED)]
    for label, impls in CATALOGUE.items():
        for impl in impls:
            code = set_body(SEED, labels.index(label), impl.body)
            bal, rt = score(code)
            print(f"{label:12} {impl.key:24} {bal:8.4f} {bal / base_bal:7.4f} {rt * 1e3:7.2f}ms "
                  f"{interleaved_ratio(code):8.2f}")

    # 2. one generation of children
    mutator = OfflineMutator(catalogue=CATALOGUE)
    ratios = []
    for s in range(args.children):
        proposal = mutator.propose(ProposalRequest(ProgramView("seed", SEED), seed=s))
        if proposal.ok:
            bal, _ = score(proposal.child_code)
            if bal == bal:
                ratios.append(bal / base_bal)
    better = sum(r > 1 for r in ratios)
    print(f"\none generation: {len(ratios)}/{args.children} children valid, {better} better than the seed; "
          f"median ratio {statistics.median(ratios):.4f}, best {max(ratios):.4f}")

    # 3. a short hill climb
    start = time.perf_counter()
    archive: list[tuple[float, str, str]] = [(base_bal, SEED, "seed")]
    path_names = {SEED: ["seed"]}
    for step in range(args.steps):
        archive.sort(key=lambda x: -x[0])
        best_bal, best_code, _ = archive[0]
        request = ProposalRequest(
            ProgramView(f"best{step}", best_code),
            inspirations=[ProgramView(f"i{k}", c) for k, (_, c, _) in enumerate(archive[1:3])],
            seed=10_000 + step,
        )
        proposal = mutator.propose(request)
        if not proposal.ok:
            continue
        bal, _ = score(proposal.child_code)
        if bal == bal:
            archive.append((bal, proposal.child_code, proposal.name))
            path_names.setdefault(proposal.child_code, path_names[best_code] + [proposal.name])
    archive.sort(key=lambda x: -x[0])
    best_bal, best_code, _ = archive[0]
    print(f"hill climb, {args.steps} proposals ({time.perf_counter() - start:.0f}s): best balancedness_gpu "
          f"{best_bal:.4f} = {best_bal / base_bal:.4f}x the seed, runtime {interleaved_ratio(best_code):.2f}x the "
          "seed's")
    print("  path: " + " -> ".join(path_names[best_code]))


if __name__ == "__main__":
    main()
