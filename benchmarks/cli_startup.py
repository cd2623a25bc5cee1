"""How fast the commands answer ``-h`` (cloud SDKs must be imported lazily).

Runs each console script with ``-h`` RUNS times and prints one JSON line: median and worst wall
time per command, and whether ``occopus-build -h`` stays under the 0.3 s target.
Usage: .venv/bin/python benchmarks/cli_startup.py [RUNS]
"""
from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time

COMMANDS = ['occopus-build', 'occopus-destroy', 'occopus-manage', 'occopus-scale',
            'occopus-import', 'occopus-rest-service']
TARGET_S = 0.3


def measure(command: str, runs: int) -> list:
    here = os.path.dirname(sys.executable)  # the virtualenv running this script first
    path = shutil.which(command, path=os.pathsep.join([here, os.environ.get('PATH', '')]))
    if path is None:
        sys.exit(f'{command} is not installed (run `make install`, then .venv/bin/python {sys.argv[0]})')
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([path, '-h'], check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    measure('occopus-build', 2)  # warm the file-system cache
    results = {command: measure(command, runs) for command in COMMANDS}
    build = results['occopus-build']
    print(json.dumps({
        'benchmark': 'cli_help_startup',
        'runs': runs,
        'median_s': {c: round(statistics.median(t), 4) for c, t in results.items()},
        'max_s': {c: round(max(t), 4) for c, t in results.items()},
        'build_help_median_s': round(statistics.median(build), 4),
        'build_help_max_s': round(max(build), 4),
        'target_s': TARGET_S,
        'pass': max(build) < TARGET_S,
    }))


if __name__ == '__main__':
    main()
