"""`import restorekit` time as a ratio to `import torch` alone, each in fresh interpreters.

python tests/benchmarks/bench_import.py --repeat 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

TIMER = "import time; t = time.perf_counter(); import {mod}; print(time.perf_counter() - t)"


def best(mod: str, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        out = subprocess.run([sys.executable, "-c", TIMER.format(mod=mod)], capture_output=True, text=True, check=True)
        times.append(float(out.stdout))
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    torch_s = best("torch", args.repeat)
    rk_s = best("restorekit", args.repeat)
    full_s = best("restorekit, torch; restorekit.list_models()", args.repeat)
    print(
        json.dumps(
            {
                "import_torch_s": torch_s,
                "import_restorekit_s": rk_s,
                "ratio": rk_s / torch_s,
                "restorekit_plus_torch_plus_registry_s": full_s,
            }
        )
    )


if __name__ == "__main__":
    main()
