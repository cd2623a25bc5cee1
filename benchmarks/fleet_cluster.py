"""The maintainer fleet against a Redis Cluster of three primaries.

Builds I infrastructures of N dummy instances each (one node, min = max = N; not measured),
then for 1, 2 and 3 members of ``occopus-manage --all -c -t 0.1`` (an interval shorter than a
round over everything, so the members pass as fast as they can) measures over a window:

* ``passes_per_s``: management passes finished per second, from the pass streams;
* ``redis_commands_per_pass``: every command the servers ran in the window (the members'
  heartbeats and listings included) divided by the passes;
* ``replace_s``: for failed instances (their dummy resource deleted out of band, one at a time),
  the time until a pass has replaced it (a new ready instance, the old record gone): median and
  worst.

Usage: .venv/bin/python benchmarks/fleet_cluster.py [--infras I] [--instances N] [--window S]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import time
from typing import Any, Dict, List

from _common import Bench, command


def build_all(bench: Bench, infras: int, instances: int, at_once: int = 4) -> List[str]:
    (bench.folder / 'nodes.yaml').write_text(
        "'node_def:bench_node':\n  - resource: {type: dummy}\n    health_check: {ping: false}\n")
    (bench.folder / 'infra.yaml').write_text(
        'infra_name: fleet\nuser_id: bench@example.com\nnodes:\n'
        f'  - {{name: n, type: bench_node, scaling: {{min: {instances}, max: {instances}}}}}\n')
    assert bench.run(command('occopus-import'), str(bench.folder / 'nodes.yaml')).returncode == 0
    ids = [f'fleet{i:03d}' for i in range(infras)]
    for start in range(0, infras, at_once):
        builds = [subprocess.Popen([command('occopus-build'), '--parallelize', '-i', infra_id,
                                    str(bench.folder / 'infra.yaml')], env=bench.env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                  for infra_id in ids[start:start + at_once]]
        for build in builds:
            _, err = build.communicate()
            assert build.returncode == 0, err[-2000:]
    return ids


def prefix(bench: Bench) -> str:
    return bench.env.get('OCCOPUS_REDIS_PREFIX', 'occo:')


def passes_between(bench: Bench, ids: List[str], start: float, end: float) -> int:
    pipe = bench.redis.pipeline(transaction=False)
    for infra_id in ids:
        pipe.xrange(f'{prefix(bench)}{{{infra_id}}}:passes', min=f'{int(start * 1000)}',
                    max=f'{int(end * 1000)}')
    return sum(len(entries) for entries in pipe.execute())


def replace_one(bench: Bench, infra_id: str, instances: int, limit: float = 120) -> float:
    """Delete one instance's resource; seconds until a pass has replaced it."""
    records = bench.redis.hgetall(f'{prefix(bench)}{{{infra_id}}}:instances')
    node_id, record = random.choice(sorted(records.items()))
    bench.redis.hdel(f'{prefix(bench)}dummycloud', json.loads(record)['instance_id'])
    started = time.monotonic()
    while time.monotonic() - started < limit:
        now = bench.redis.hgetall(f'{prefix(bench)}{{{infra_id}}}:instances')
        if node_id not in now and len(now) == instances and \
                all(json.loads(v)['state'] == 'ready' for v in now.values()):
            return time.monotonic() - started
        time.sleep(0.02)
    raise AssertionError(f'{infra_id}: a failed instance was not replaced within {limit} s')


def run_members(bench: Bench, ids: List[str], members: int, instances: int, window: float,
                failures: int) -> Dict[str, Any]:
    processes = [subprocess.Popen([command('occopus-manage'), '--all', '-c', '-t', '0.1'],
                                  env=dict(bench.env, OCCOPUS_HOST_ID=f'bench-host-{n}'),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                 for n in range(members)]
    try:
        time.sleep(3.0)  # all have joined and every one has a share
        bench.reset_stats()
        start = time.time()
        time.sleep(window)
        end = time.time()
        calls = sum(bench.command_stats().values())
        done = passes_between(bench, ids, start, end)
        replaced = [replace_one(bench, random.choice(ids), instances) for _ in range(failures)]
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        errors = [process.communicate(timeout=120)[1] for process in processes]
    assert all(p.returncode == 0 for p in processes), errors
    return {'members': members, 'passes_per_s': round(done / (end - start), 1),
            'redis_commands_per_pass': round(calls / max(1, done), 1),
            'replace_s_median': round(statistics.median(replaced), 2),
            'replace_s_worst': round(max(replaced), 2)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument('--infras', type=int, default=100)
    parser.add_argument('--instances', type=int, default=100)
    parser.add_argument('--window', type=float, default=10.0)
    parser.add_argument('--failures', type=int, default=5)
    args = parser.parse_args()
    with Bench(cluster=True) as bench:
        started = time.perf_counter()
        ids = build_all(bench, args.infras, args.instances)
        built = time.perf_counter() - started
        results = [run_members(bench, ids, members, args.instances, args.window, args.failures)
                   for members in (1, 2, 3)]
    print(json.dumps({'benchmark': 'fleet_cluster', 'infras': args.infras,
                      'instances_each': args.instances, 'cores': os.cpu_count(),
                      'build_all_s': round(built, 1), 'window_s': args.window,
                      'by_members': results}))


if __name__ == '__main__':
    main()
