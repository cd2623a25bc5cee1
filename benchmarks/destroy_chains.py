"""Destroy two dependency chains whose slow drops sit on different levels.

Chain x: x2 depends on x1; chain y: y2 depends on y1.  x2 (the top of its chain) and y1 (the
bottom of its chain) each take DROP seconds to drop.  Level by level, y1 would wait for x2:
2 x DROP.  Walking the graph's edges reversed, the two slow drops overlap: about 1 x DROP.
Prints one JSON line: the destroy's wall time and its ratio to one drop's time.
Usage: .venv/bin/python benchmarks/destroy_chains.py [--drop-time S]
"""
from __future__ import annotations

import argparse
import json

from _common import Bench, command


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument('--drop-time', type=float, default=3.0)
    drop = parser.parse_args().drop_time
    with Bench() as bench:
        (bench.folder / 'nodes.yaml').write_text(
            "'node_def:slow':\n"
            f'  - resource: {{type: dummy, drop_time: {drop}}}\n'
            '    health_check: {ping: false}\n'
            "'node_def:fast':\n"
            '  - resource: {type: dummy}\n'
            '    health_check: {ping: false}\n')
        (bench.folder / 'infra.yaml').write_text(
            'infra_name: chains\nuser_id: bench\nnodes:\n'
            '  - {name: x1, type: fast}\n  - {name: x2, type: slow}\n'
            '  - {name: y1, type: slow}\n  - {name: y2, type: fast}\n'
            'dependencies:\n  - [x2, x1]\n  - [y2, y1]\n')
        assert bench.run(command('occopus-import'), str(bench.folder / 'nodes.yaml')).returncode == 0
        built = bench.run(command('occopus-build'), '--parallelize', '-i', 'chains',
                          str(bench.folder / 'infra.yaml'))
        assert built.returncode == 0, built.stderr[-2000:]
        result = bench.measure(command('occopus-destroy'), '--parallelize', '-i', 'chains')
        assert result['exit_code'] == 0, result['stderr'][-2000:]
        left = bench.redis.hlen('occo:dummycloud')
    print(json.dumps({
        'benchmark': 'destroy_chains', 'drop_time_s': drop, 'wall_s': round(result['wall_s'], 3),
        'ratio_to_one_drop': round(result['wall_s'] / drop, 3), 'level_by_level_s': 2 * drop,
        'resources_left': left,
    }))


if __name__ == '__main__':
    main()
