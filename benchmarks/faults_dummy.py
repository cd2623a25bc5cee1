"""A slow and a throttling cloud, played by the dummy cloud.

1. One node whose create call blocks 40 s, with ``create_timeout: 3``: the build's exit code,
   wall time (target: under 15 s) and what is left.
2. 30 nodes with ``throttle_rate: 0.4`` built with ``--parallelize``: exit code, wall time,
   how many retries were told, and how many resources are running.
Prints one JSON line.
Usage: .venv/bin/python benchmarks/faults_dummy.py
"""
from __future__ import annotations

import json

from _common import Bench, command


def node_file(bench: Bench, name: str, resource: str) -> str:
    path = bench.folder / f'{name}.yaml'
    path.write_text(f"'node_def:{name}':\n  - resource: {resource}\n    health_check: {{ping: false}}\n")
    return str(path)


def infra_file(bench: Bench, name: str, kind: str, count: int) -> str:
    path = bench.folder / f'infra-{name}.yaml'
    path.write_text(f'infra_name: {name}\nuser_id: bench\nnodes:\n' + ''.join(
        f'  - {{name: n{i}, type: {kind}}}\n' for i in range(count)))
    return str(path)


def main() -> None:
    with Bench() as bench:
        for name, resource in (('hung', '{type: dummy, create_time: 40, create_timeout: 3}'),
                               ('flaky', '{type: dummy, throttle_rate: 0.4}')):
            assert bench.run(command('occopus-import'), node_file(bench, name, resource)).returncode == 0
        hung = bench.measure(command('occopus-build'), '-i', 'hung', infra_file(bench, 'hung', 'hung', 1))
        hung_left = len([k for k in bench.redis.scan_iter() if 'hung' in k]) + bench.redis.hlen('occo:dummycloud')
        flaky = bench.measure(command('occopus-build'), '--parallelize', '-i', 'flaky',
                              infra_file(bench, 'flaky', 'flaky', 30))
        running = bench.redis.hlen('occo:dummycloud')
    print(json.dumps({
        'benchmark': 'faults_dummy',
        'hung_create_exit_code': hung['exit_code'], 'hung_create_wall_s': round(hung['wall_s'], 3),
        'hung_create_left': hung_left,
        'throttled_exit_code': flaky['exit_code'], 'throttled_wall_s': round(flaky['wall_s'], 3),
        'throttled_retries': flaky['stderr'].count('; try '), 'throttled_resources': running,
    }))


if __name__ == '__main__':
    main()
