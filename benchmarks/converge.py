"""How fast `occopus-manage -c` brings a node back when half of its creates fail.

A node on one dummy implementation with ``fail_rate: 0.5`` and ``retry_backoff: 1`` is built with
1 instance; with `occopus-manage -i ID -c -t 0.2` running, it is scaled to 6, and the time until
6 instances are ready is measured.  Prints the median and the worst of T trials (default 20).

Usage: .venv/bin/python benchmarks/converge.py [--trials T]
"""
from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import time

from _common import Bench, command

NODES = ("'node_def:half':\n  - resource: {type: dummy, fail_rate: 0.5}\n"
         '    health_check: {ping: false}\n')
INFRA = 'infra_name: converge\nuser_id: bench\nnodes:\n  - {name: half, type: half, scaling: {min: 1, max: 10}}\n'


def ready(bench: Bench, infra_id: str) -> int:
    values = bench.redis.hvals(f'occo:{{{infra_id}}}:instances')
    return sum(json.loads(v)['state'] == 'ready' for v in values)


def trial(bench: Bench, number: int, config: str) -> float:
    infra_id = f'converge{number}'
    for _ in range(20):  # the build needs its first instance to come up (half of them fail)
        built = bench.run(command('occopus-build'), '--cfg', config, '-i', infra_id,
                          str(bench.folder / 'infra.yaml'))
        if built.returncode == 0:
            break
    assert built.returncode == 0, built.stderr[-2000:]
    maintainer = subprocess.Popen([command('occopus-manage'), '--cfg', config, '-i', infra_id,
                                   '-c', '-t', '0.2'], env=bench.env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        start = time.monotonic()
        scaled = bench.run(command('occopus-scale'), '-i', infra_id, '-n', 'half', '-s', '6')
        assert scaled.returncode == 0, scaled.stderr
        while ready(bench, infra_id) < 6:
            if time.monotonic() - start > 120:
                raise AssertionError(f'{infra_id} did not reach 6 ready instances in 120 s')
            time.sleep(0.02)
        return time.monotonic() - start
    finally:
        maintainer.send_signal(signal.SIGINT)
        maintainer.wait(60)
        bench.run(command('occopus-destroy'), '-i', infra_id)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument('--trials', type=int, default=20)
    trials = parser.parse_args().trials
    with Bench() as bench:
        (bench.folder / 'nodes.yaml').write_text(NODES)
        (bench.folder / 'infra.yaml').write_text(INFRA)
        (bench.folder / 'cfg.yaml').write_text('retry_backoff: 1\n')
        assert bench.run(command('occopus-import'), str(bench.folder / 'nodes.yaml')).returncode == 0
        times = [trial(bench, n, str(bench.folder / 'cfg.yaml')) for n in range(trials)]
    print(json.dumps({'benchmark': 'converge', 'fail_rate': 0.5, 'retry_backoff_s': 1,
                      'interval_s': 0.2, 'from': 1, 'to': 6, 'trials': trials,
                      'median_s': round(statistics.median(times), 2),
                      'worst_s': round(max(times), 2), 'best_s': round(min(times), 2),
                      'target': {'median_s': 3.0, 'met': statistics.median(times) < 3.0}}))


if __name__ == '__main__':
    main()
