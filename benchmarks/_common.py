"""Shared by the benchmark scripts: a private Redis, generated dummy infrastructures, and
running a command while measuring wall time, CPU, peak memory and Redis commands."""
from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from occo.localredis import LocalCluster, RedisServer  # noqa: E402

BIN = Path(sys.executable).parent


def command(name: str) -> str:
    path = BIN / name
    if not path.exists():
        sys.exit(f'{name} is not installed next to {sys.executable} (run `make install`)')
    return str(path)


def write_dummy_infra(folder: Path, nodes: int, levels: int, boot_time: float) -> Path:
    """N dummy nodes in L dependency levels: node i sits in level i % L and depends on node
    i - 1 of the level before, so the critical path is L x boot_time."""
    (folder / 'nodes.yaml').write_text(
        "'node_def:bench_node':\n"
        f'  - resource: {{type: dummy, boot_time: {boot_time}}}\n'
        '    health_check: {ping: false}\n')
    lines = ['infra_name: bench', 'user_id: bench@example.com', 'nodes:']
    lines += [f'  - {{name: n{i}, type: bench_node}}' for i in range(nodes)]
    deps = [f'  - [n{i}, n{i - 1}]' for i in range(nodes) if i % levels]
    if deps:
        lines += ['dependencies:'] + deps
    (folder / 'infra.yaml').write_text('\n'.join(lines) + '\n')
    return folder


NOT_OURS = ('cmdstat_info', 'cmdstat_config|resetstat')  # the benchmark's own INFO and CONFIG


class Bench:
    """A private redis-server (or, with ``cluster``, a cluster of three primaries) and an
    environment that points the commands at it."""

    def __init__(self, cluster: bool = False) -> None:
        self.server: Any = LocalCluster() if cluster else RedisServer()
        self.folder = Path(tempfile.mkdtemp(prefix='occo-bench-'))

    def __enter__(self) -> 'Bench':
        url = self.server.start()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith('OCCOPUS_')}
        self.env.update(OCCOPUS_REDIS_URL=url, OCCOPUS_HEALTH_CHECKS='0',
                        HOME=str(self.folder))
        from occo.store import client_factory
        self.redis = client_factory(url)[0](60.0)
        self.nodes = [self.redis] if isinstance(self.server, RedisServer) else [
            __import__('redis').Redis(port=s.port, decode_responses=True) for s in self.server.servers]
        return self

    def reset_stats(self) -> None:
        for node in self.nodes:
            node.config_resetstat()

    def command_stats(self) -> Dict[str, int]:
        """Calls by command since :meth:`reset_stats`, summed over the servers."""
        calls: Dict[str, int] = {}
        for node in self.nodes:
            for name, value in node.info('commandstats').items():
                if name not in NOT_OURS:
                    calls[name[len('cmdstat_'):]] = calls.get(name[len('cmdstat_'):], 0) + value['calls']
        return calls

    def __exit__(self, *exc: object) -> None:
        self.server.stop()
        import shutil
        shutil.rmtree(self.folder, ignore_errors=True)

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(list(args), env=self.env, capture_output=True, text=True)

    def measure(self, *args: str) -> Dict[str, object]:
        """Run a command; wall time, CPU seconds, peak RSS and Redis commands it caused."""
        self.reset_stats()
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        result = self.run(*args)
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        commands = sum(self.command_stats().values())
        return {'exit_code': result.returncode, 'stdout': result.stdout, 'stderr': result.stderr,
                'wall_s': wall, 'redis_commands': commands,
                'cpu_s': (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
                'peak_rss_mb': after.ru_maxrss / 1024}


def arguments(argv: Optional[List[str]] = None) -> Dict[str, float]:
    import argparse
    parser = argparse.ArgumentParser()
    parser.add_argument('--nodes', type=int, default=100)
    parser.add_argument('--levels', type=int, default=5)
    parser.add_argument('--boot-time', type=float, default=0.0)
    parser.add_argument('--parallelism', type=int, default=10)
    parser.add_argument('--sequential', action='store_true',
                        help='build one instance at a time (the default mode of occopus-build)')
    return vars(parser.parse_args(argv))


def cloud_summary(nodes: int, built: Dict[str, Any], destroyed: Dict[str, Any],
                  build_calls: Dict[str, int], destroy_calls: Dict[str, int]) -> Dict[str, Any]:
    """The fields every cloud benchmark prints: the build's and the destroy's wall time,
    cloud calls (per node and by action or route), Redis commands per node, the build's CPU
    time and peak RSS (``built``/``destroyed``: what :meth:`Bench.measure` returned)."""
    return {
        'wall_s': round(built['wall_s'], 3),
        'cloud_calls': sum(build_calls.values()),
        'cloud_calls_per_node': round(sum(build_calls.values()) / nodes, 2),
        'cloud_calls_by_action': build_calls,
        'redis_commands': built['redis_commands'],
        'redis_commands_per_node': round(built['redis_commands'] / nodes, 2),
        'cpu_s': round(built['cpu_s'], 3), 'peak_rss_mb': round(built['peak_rss_mb'], 1),
        'destroy_wall_s': round(destroyed['wall_s'], 3),
        'destroy_cloud_calls_per_node': round(sum(destroy_calls.values()) / nodes, 2),
        'destroy_cloud_calls_by_action': destroy_calls,
        'destroy_redis_commands_per_node': round(destroyed['redis_commands'] / nodes, 2),
    }
