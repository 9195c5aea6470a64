"""The harness keeps medium-sized arrays on the heap: allocating, touching and freeing them again costs
no new page faults once the thresholds are set (glibc only; elsewhere the call reports False)."""
from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from tests.evaluator_helpers import REPO

PROBE = r'''
import resource, sys
import numpy as np
sys.path.insert(0, sys.argv[1])
if sys.argv[2] == "tuned":
    from evaluator.allocator import keep_medium_arrays_on_the_heap
    assert keep_medium_arrays_on_the_heap() and keep_medium_arrays_on_the_heap()
for _ in range(5):  # let the heap reach its working size
    arrays = [np.ones(40_000, dtype=np.int64) for _ in range(8)]
    del arrays
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(50):
    arrays = [np.ones(40_000, dtype=np.int64) for _ in range(8)]  # 320 KB each, touched by ones()
    del arrays
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
'''


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", PROBE, str(REPO), mode], capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt thresholds are glibc's")
def test_medium_arrays_stop_costing_page_faults() -> None:
    default, tuned = _faults("default"), _faults("tuned")
    assert default > 1000, default  # 400 arrays of 78 pages each came fresh from the kernel
    assert tuned < 100, tuned
