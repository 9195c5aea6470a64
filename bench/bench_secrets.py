"""What scrubbing secrets costs per archived text, against what the archive spends on the text anyway.

Texts like those a campaign stores (a feedback block, a traceback, 4 KB of printed output, a patch diff
the size of the seed program) are scrubbed with four secrets configured, and the time is compared, in
the same run, with two baselines: `json.dumps` of the same text (the archive serialises every text it
stores) and masking only the exact values with `str.replace` (the weakest scrubbing there is). Also
prints the one-time cost of building the patterns.

Run: `.venv/bin/python bench/bench_secrets.py [--repeat 2000]`
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from evolve.scrub import Scrubber  # noqa: E402

SECRETS = {
    "OPENAI_API_KEY": "sk-proj-Q7vLm2Xw9Rt4Kp8Zs1Nd6Hf3Jb5Gc0Ya" * 2,
    "ANTHROPIC_API_KEY": "sk-ant-api03-Zq8Lr4Nv2Xm6Tp0Ws3Hd7Jk1Bf5Gc9Ye",
    "HF_TOKEN": "hf_TmVyZXJHb29kS2V5Rm9yVGVzdHM",
    "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
}


def texts() -> dict[str, str]:
    seed = (REPO / "candidates" / "seed.py").read_text()
    return {
        "feedback (300 chars)": "balancedness_gpu 0.9123 (worst window 7: 0.8811), balancedness_expert 0.95, "
                                "balancedness_node 0.99, speed-up over no balancing 1.204x\nlayers with the worst GPU "
                                "balance: 3 (0.871), 17 (0.874), 40 (0.880)\nruntime 4.21 ms median per call",
        "traceback (600 chars)": "Traceback (most recent call last):\n" + "  File \"<program>\", line 41, in plan\n"
                                 "    idx = torch.argsort(w, descending=True)\n" * 6 + "IndexError: index 288 out of "
                                                                                       "bounds",
        "stdout (4 KB)": "".join(f"window {i}: max load {1000 + i * 7} tokens, mean {800 + i} tokens\n"
                                 for i in range(80)),
        f"diff ({len(seed) // 1000} KB)": seed,
    }


def per_call(fn, text: str, repeat: int) -> float:
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeat):
            fn(text)
        best = min(best, (time.perf_counter() - start) / repeat)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2000)
    args = parser.parse_args()
    start = time.perf_counter()
    scrubber = Scrubber(SECRETS)
    build_ms = (time.perf_counter() - start) * 1e3
    values = list(SECRETS.values())

    def exact_only(text: str) -> str:
        for value in values:
            text = text.replace(value, "***")
        return text

    print(f"patterns for {len(SECRETS)} secrets built once in {build_ms:.1f} ms")
    print(f"{'text':<24} {'scrub':>10} {'json.dumps':>11} {'ratio':>7} {'exact only':>11} {'ratio':>7}")
    for name, text in texts().items():
        assert scrubber.scrub(text) is text  # ordinary text: nothing to remove
        t_scrub = per_call(scrubber.scrub, text, args.repeat)
        t_json = per_call(json.dumps, text, args.repeat)
        t_exact = per_call(exact_only, text, args.repeat)
        print(f"{name:<24} {t_scrub * 1e6:>8.2f}us {t_json * 1e6:>9.2f}us {t_scrub / t_json:>6.1f}x "
              f"{t_exact * 1e6:>9.2f}us {t_scrub / t_exact:>6.1f}x")
    print("(best of 3 rounds each; the machine may be busy, so read the ratios rather than the times)")


if __name__ == "__main__":
    main()
