"""Build, manage and destroy 10,000 zero-boot dummy nodes: the whole life of a big infrastructure.

Writes N dummy nodes in L dependency levels (as build_dummy.py), imports their node definition
(not measured), then measures three commands, each on its own:

1. ``occopus-build --parallelize --parallelism P infra.yaml``
2. one ``occopus-manage -i ID`` pass over the healthy infrastructure
3. ``occopus-destroy -i ID``

and prints one JSON line with, for each, wall time, CPU time, the command's own peak RSS and the
Redis commands it caused (INFO commandstats, commands inside Lua scripts included), plus the
same per node.  Targets (for the default 10,000 nodes): the build under 15 s and 200 MB.

``--profile`` then builds the same description once more (not measured) under cProfile and
prints on stderr the top entries of the main thread by cumulative time and of all threads
together by own time, then destroys that copy too; stdout stays one JSON line.

Usage: .venv/bin/python benchmarks/build_10k.py [--nodes N] [--levels L] [--parallelism P]
       [--profile [TOP]]
"""
from __future__ import annotations

import argparse
import json
import os
import pstats
import subprocess
import sys
import tempfile
import time
from typing import Dict, List

from _common import Bench, command, write_dummy_infra

BUILD_TARGET_S = 15.0
BUILD_TARGET_MB = 200.0


def measure(bench: Bench, args: List[str]) -> Dict[str, object]:
    """Run one command: its wall time, CPU time and peak RSS (its own, from wait4, not the
    largest of all children so far) and the Redis commands it caused."""
    bench.reset_stats()
    with tempfile.TemporaryFile('w+') as out, tempfile.TemporaryFile('w+') as err:
        start = time.perf_counter()
        child = subprocess.Popen(args, env=bench.env, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    return {'exit_code': child.returncode, 'stdout': stdout, 'stderr': stderr, 'wall_s': wall,
            'cpu_s': usage.ru_utime + usage.ru_stime, 'peak_rss_mb': usage.ru_maxrss / 1024,
            'redis_commands': sum(bench.command_stats().values())}


def figures(result: Dict[str, object], nodes: int) -> Dict[str, object]:
    return {'wall_s': round(result['wall_s'], 3), 'cpu_s': round(result['cpu_s'], 3),
            'peak_rss_mb': round(result['peak_rss_mb'], 1),
            'redis_commands': result['redis_commands'],
            'wall_ms_per_node': round(1000 * result['wall_s'] / nodes, 3),
            'cpu_ms_per_node': round(1000 * result['cpu_s'] / nodes, 3),
            'redis_commands_per_node': round(result['redis_commands'] / nodes, 2)}


def checked(result: Dict[str, object], what: str) -> Dict[str, object]:
    if result['exit_code'] != 0:
        sys.exit(f'{what} failed with exit code {result["exit_code"]}:\n{result["stderr"][-2000:]}')
    return result


# -- --profile: run a console script's main() under cProfile in every thread ----------------------

PROFILED = '''
import cProfile, pstats, sys, threading
profiles = []
run = threading.Thread.run
def profiled_run(self):
    profile = cProfile.Profile()
    profile.enable()
    try:
        run(self)
    finally:
        profile.disable()
        profiles.append(profile)
threading.Thread.run = profiled_run
module, out, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
main = __import__(module, fromlist=['main']).main
profile = cProfile.Profile()
profile.enable()
try:
    code = main(argv)
finally:
    profile.disable()
    profile.dump_stats(out + '.main')
    stats = pstats.Stats(profile)
    for other in profiles:
        stats.add(other)
    stats.dump_stats(out + '.all')
    print(len(profiles), file=open(out + '.threads', 'w'))
sys.exit(code)
'''


def profile_build(bench: Bench, infra: str, parallelism: int, top: int) -> None:
    """Build ``infra`` once more under cProfile (all threads), print the top entries by
    cumulative and by own time on stderr, and destroy that copy."""
    out = str(bench.folder / 'build.prof')
    argv = ['--parallelize', '--parallelism', str(parallelism), infra]
    start = time.perf_counter()
    result = subprocess.run([sys.executable, '-c', PROFILED, 'occo.cli.build', out] + argv,
                            env=bench.env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f'profiled occopus-build failed:\n{result.stderr[-2000:]}')
    with open(out + '.threads') as threads:
        workers = threads.read().strip()
    print(f'== cProfile of occopus-build {" ".join(argv)}: {wall:.1f} s under the profiler\n'
          '== main thread (loading, compiling, planning, walking the plan), by cumulative time:',
          file=sys.stderr)
    main_thread = pstats.Stats(out + '.main', stream=sys.stderr).strip_dirs().sort_stats('cumulative')
    main_thread.print_stats(top)
    print('== of which reading, checking, compiling and storing the description:', file=sys.stderr)
    main_thread.print_stats(r'\((load_description|load_infra_description|compile|compile_infra|'
                            r'parse_infra_description|to_json|_levels|_infer_edges)\)')
    print(f'== main thread and its {workers} worker threads together, by own time (time a thread '
          'spends waiting counts too):', file=sys.stderr)
    pstats.Stats(out + '.all', stream=sys.stderr).strip_dirs().sort_stats('tottime').print_stats(top)
    bench.run(command('occopus-destroy'), '-i', result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--nodes', type=int, default=10_000)
    parser.add_argument('--levels', type=int, default=5)
    parser.add_argument('--parallelism', type=int, default=10)
    parser.add_argument('--profile', type=int, nargs='?', const=30, default=0, metavar='TOP',
                        help='also profile a build and print the TOP entries on stderr')
    args = parser.parse_args()
    nodes = args.nodes
    with Bench() as bench:
        folder = write_dummy_infra(bench.folder, nodes, args.levels, 0.0)
        imported = bench.run(command('occopus-import'), str(folder / 'nodes.yaml'))
        assert imported.returncode == 0, imported.stderr
        infra = str(folder / 'infra.yaml')
        build = checked(measure(bench, [command('occopus-build'), '--parallelize', '--parallelism',
                                        str(args.parallelism), infra]), 'occopus-build')
        infra_id = build['stdout'].strip().splitlines()[-1]
        built = bench.redis.hlen('occo:dummycloud')
        manage = checked(measure(bench, [command('occopus-manage'), '-i', infra_id]), 'occopus-manage')
        destroy = checked(measure(bench, [command('occopus-destroy'), '-i', infra_id]),
                          'occopus-destroy')
        left = bench.redis.hlen('occo:dummycloud')
        keys = sum(1 for _ in bench.redis.scan_iter(match=f'*{infra_id}*'))
        if args.profile:
            profile_build(bench, infra, args.parallelism, args.profile)
    print(json.dumps({
        'benchmark': 'build_10k', 'nodes': nodes, 'levels': args.levels,
        'parallelism': args.parallelism,
        'build': figures(build, nodes), 'manage': figures(manage, nodes),
        'destroy': figures(destroy, nodes),
        'resources_built': built, 'resources_left': left, 'infra_keys_left': keys,
        'build_target': {'wall_s': BUILD_TARGET_S, 'peak_rss_mb': BUILD_TARGET_MB,
                         'met': build['wall_s'] < BUILD_TARGET_S
                         and build['peak_rss_mb'] < BUILD_TARGET_MB},
    }))


if __name__ == '__main__':
    main()
