"""How long generating the default dataset takes, against its 60 s budget on 2 CPU cores.

Generates `deepseek-v3:search` from its manifest (no cache), checks the pinned checksum, and prints the
time and its ratio to the budget (below 1 is within budget). Generating the same split without route
samples is timed in the same run (alternating, best of `--repeat` each), as the baseline for what
recording routes costs (ratio near 1).
Loading the cached file is timed in the same process as the baseline a user sees after the first run.

    .venv/bin/python bench/bench_tracegen.py [--threads 2] [--dataset deepseek-v3] [--device cpu] [--repeat 2]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evaluator import traces  # noqa: E402
from evaluator.traces import generator  # noqa: E402

BUDGET_S = 60.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (the budget assumes 2)")
    parser.add_argument("--dataset", default=traces.DEFAULT_DATASET)
    parser.add_argument("--split", default="search")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each variant; the fastest counts")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    manifest = traces.manifests()[args.dataset]
    # with and without route samples, alternating, best of --repeat each: shared machines are noisy
    params = generator.TraceParams.from_dict(manifest.split_params(args.split))
    bare_s = generate_s = float("inf")
    for _ in range(args.repeat):
        start = time.perf_counter()
        bare = generator.generate(manifest.preset, generator.with_overrides(params, route_samples_per_step=0),
                                  manifest.split_model_seed(args.split),
                                  int(manifest.splits[args.split]["traffic_seed"]), device=args.device, progress=True)
        bare_s = min(bare_s, time.perf_counter() - start)
        start = time.perf_counter()
        trace = traces.generate_split(manifest, args.split, progress=True, device=args.device)
        generate_s = min(generate_s, time.perf_counter() - start)
    pinned = manifest.splits[args.split].get("sha256", "")
    status = "matches the pin" if trace.sha256 == pinned else f"DIFFERS from the pin {pinned[:16]}"
    same = "same counts" if bare.sha256 == trace.sha256 else "COUNTS DIFFER"

    with tempfile.TemporaryDirectory() as tmp:
        path = traces.save_npz(trace, Path(tmp) / "t.npz")
        start = time.perf_counter()
        traces.load_npz(path)
        load_s = time.perf_counter() - start

    shape = "x".join(map(str, trace.counts.shape))
    print(f"{args.dataset}:{args.split} ({shape}) on {args.device}, {args.threads} threads: sha256 "
          f"{trace.sha256[:16]} {status}")
    print(f"generate {generate_s:6.2f} s   budget {BUDGET_S:.0f} s   ratio {generate_s / BUDGET_S:.2f}  (<1 is within "
          "budget)")
    routes = 0 if trace.routes is None else trace.routes.shape[0]
    print(f"route samples: {routes} tokens ({0 if trace.routes is None else trace.routes.nbytes / 2**20:.1f} MiB); "
          f"without them {bare_s:6.2f} s ({same})   with/without {generate_s / max(bare_s, 1e-9):.2f}")
    print(f"load from cache {load_s:6.2f} s   generate/load {generate_s / max(load_s, 1e-9):.1f}x")
    return 0 if (trace.sha256 == pinned or not pinned) and bare.sha256 == trace.sha256 else 1


if __name__ == "__main__":
    sys.exit(main())
