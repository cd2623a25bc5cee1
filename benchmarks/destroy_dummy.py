"""Destroy N dummy nodes in L dependency levels with ``occopus-destroy --parallelize``.

Builds the infrastructure first (not measured), then prints one JSON line about the destroy:
wall time, Redis commands (per node too), CPU time (per node too), and what is left.
Usage: .venv/bin/python benchmarks/destroy_dummy.py [--nodes N] [--levels L]
"""
from __future__ import annotations

import json

from _common import Bench, arguments, command, write_dummy_infra


def main() -> None:
    args = arguments()
    nodes, levels = args['nodes'], args['levels']
    with Bench() as bench:
        folder = write_dummy_infra(bench.folder, nodes, levels, 0)
        assert bench.run(command('occopus-import'), str(folder / 'nodes.yaml')).returncode == 0
        built = bench.run(command('occopus-build'), '--parallelize', str(folder / 'infra.yaml'))
        assert built.returncode == 0, built.stderr[-2000:]
        infra_id = built.stdout.strip().splitlines()[-1]
        result = bench.measure(command('occopus-destroy'), '--parallelize', '-i', infra_id)
        assert result['exit_code'] == 0, result['stderr'][-2000:]
        left = bench.redis.hlen('occo:dummycloud')
        keys = [k for k in bench.redis.scan_iter() if infra_id in k]
    print(json.dumps({
        'benchmark': 'destroy_dummy', 'nodes': nodes, 'levels': levels,
        'parallelism': args['parallelism'], 'wall_s': round(result['wall_s'], 3),
        'redis_commands': result['redis_commands'],
        'redis_commands_per_node': round(result['redis_commands'] / nodes, 2),
        'cpu_s': round(result['cpu_s'], 3),
        'cpu_ms_per_node': round(1000 * result['cpu_s'] / nodes, 3),
        'peak_rss_mb': round(result['peak_rss_mb'], 1),
        'resources_left': left, 'infra_keys_left': len(keys),
    }))


if __name__ == '__main__':
    main()
