"""Build N dummy nodes in L dependency levels with ``occopus-build --parallelize``.

Prints one JSON line: wall time of the whole command, the critical path (L x boot_time) and
their ratio, Redis commands issued (INFO commandstats, per node too), the command's CPU time
(per node too) and peak RSS.
Usage: .venv/bin/python benchmarks/build_dummy.py [--nodes N] [--levels L] [--boot-time S]
       [--parallelism P] [--sequential]
"""
from __future__ import annotations

import json

from _common import Bench, arguments, command, write_dummy_infra


def main() -> None:
    args = arguments()
    nodes, levels, boot = args['nodes'], args['levels'], args['boot_time']
    with Bench() as bench:
        folder = write_dummy_infra(bench.folder, nodes, levels, boot)
        imported = bench.run(command('occopus-import'), str(folder / 'nodes.yaml'))
        assert imported.returncode == 0, imported.stderr
        mode = ['--parallelize', '--parallelism', str(args['parallelism'])]
        result = bench.measure(command('occopus-build'), *([] if args['sequential'] else mode),
                               str(folder / 'infra.yaml'))
        assert result['exit_code'] == 0, result['stderr'][-2000:]
        left = bench.redis.hlen('occo:dummycloud')
    critical = levels * boot
    print(json.dumps({
        'benchmark': 'build_dummy', 'nodes': nodes, 'levels': levels, 'boot_time_s': boot,
        'mode': 'sequential' if args['sequential'] else 'parallel',
        'parallelism': 1 if args['sequential'] else args['parallelism'], 'wall_s': round(result['wall_s'], 3),
        'critical_path_s': critical,
        'ratio': round(result['wall_s'] / critical, 3) if critical else None,
        'redis_commands': result['redis_commands'],
        'redis_commands_per_node': round(result['redis_commands'] / nodes, 2),
        'cpu_s': round(result['cpu_s'], 3),
        'cpu_ms_per_node': round(1000 * result['cpu_s'] / nodes, 3),
        'peak_rss_mb': round(result['peak_rss_mb'], 1), 'resources_built': left,
    }))


if __name__ == '__main__':
    main()
