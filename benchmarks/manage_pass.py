"""One `occopus-manage -i ID` pass over a healthy dummy infrastructure of many instances.

Builds N instances (nodes of 100 instances each, built in parallel; not measured), then prints
one JSON line about a single management pass: wall time of the whole command, Redis commands
(INFO commandstats, script-internal ones included) and round trips it needed, CPU, peak RSS.
Usage: .venv/bin/python benchmarks/manage_pass.py [--instances N]
"""
from __future__ import annotations

import argparse
import json

from _common import Bench, command

PER_NODE = 100


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument('--instances', type=int, default=2000)
    instances = parser.parse_args().instances
    nodes = max(1, instances // PER_NODE)
    with Bench() as bench:
        (bench.folder / 'nodes.yaml').write_text(
            "'node_def:bench_node':\n  - resource: {type: dummy}\n    health_check: {ping: false}\n")
        lines = ['infra_name: bench', 'user_id: bench@example.com', 'nodes:']
        lines += [f'  - {{name: n{i}, type: bench_node, scaling: {{min: {PER_NODE}, max: {PER_NODE}}}}}'
                  for i in range(nodes)]
        (bench.folder / 'infra.yaml').write_text('\n'.join(lines) + '\n')
        assert bench.run(command('occopus-import'), str(bench.folder / 'nodes.yaml')).returncode == 0
        built = bench.run(command('occopus-build'), '--parallelize', '--parallelism', '20',
                          str(bench.folder / 'infra.yaml'))
        assert built.returncode == 0, built.stderr[-2000:]
        infra_id = built.stdout.strip().splitlines()[-1]
        result = bench.measure(command('occopus-manage'), '-i', infra_id)
        assert result['exit_code'] == 0, result['stderr'][-2000:]
        assert '0 instances created (0 ready), 0 dropped; ready' in result['stdout'], result['stdout']
        stats = bench.command_stats()
    print(json.dumps({
        'benchmark': 'manage_pass', 'instances': nodes * PER_NODE, 'nodes': nodes,
        'wall_s': round(result['wall_s'], 3), 'redis_commands': result['redis_commands'],
        'commands': dict(sorted(stats.items())),
        'cpu_s': round(result['cpu_s'], 3), 'peak_rss_mb': round(result['peak_rss_mb'], 1),
    }))


if __name__ == '__main__':
    main()
