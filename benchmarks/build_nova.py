"""Build N nova nodes against the local Keystone/Nova peer (``tests/novapeer.py``) with
``occopus-build --parallelize``, then destroy them.

The peer runs as a process of its own on a free loopback port and counts every cloud HTTP
call it answers (Keystone included).  Prints one JSON line: wall time of the build and of the
destroy, cloud calls per node of each (and by route), Redis commands per node, CPU and peak
RSS of the build.
Usage: .venv/bin/python benchmarks/build_nova.py [--nodes N] [--levels L] [--boot-time S]
       [--parallelism P] [--sequential] [--floating-ip] [--volume-size GB]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import urllib.request
from typing import Any, Dict

from _common import ROOT, Bench, arguments, cloud_summary, command, write_dummy_infra

sys.path.insert(0, str(ROOT / 'tests'))
from novapeer import IMAGE_ID, NETWORK_ID, USERS  # noqa: E402

PROJECT = 'bench-project'


class Peer:
    """``python tests/novapeer.py --port 0`` in a process of its own."""

    def __enter__(self) -> 'Peer':
        self.process = subprocess.Popen([sys.executable, str(ROOT / 'tests' / 'novapeer.py'), '--port', '0'],
                                        stdout=subprocess.PIPE, text=True)
        first = self.process.stdout.readline() if self.process.stdout else ''
        if not first.startswith('novapeer listening on '):
            self.process.kill()
            sys.exit(f'the nova peer did not start: {first!r}')
        self.url = first.split()[3]
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)

    def admin(self, path: str, body: Any = None) -> Dict[str, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f'{self.url}{path}', data=data,
                                         headers={'Content-Type': 'application/json'})
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.loads(answer.read())

    def calls(self) -> Dict[str, int]:
        return dict(self.admin('/_peer/state')['calls_by_route'])


def extra_arguments() -> Dict[str, Any]:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument('--floating-ip', action='store_true', help='give every node a floating IP')
    parser.add_argument('--volume-size', type=int, default=None, help='boot every node from a volume')
    known, rest = parser.parse_known_args()
    sys.argv[1:] = rest
    return vars(known)


def spent(before: Dict[str, int], after: Dict[str, int]) -> Dict[str, int]:
    return {k: after[k] - before.get(k, 0) for k in sorted(after) if after[k] - before.get(k, 0)}


def main() -> None:
    extra = extra_arguments()
    args = arguments()
    nodes = args['nodes']
    with Peer() as peer, Bench() as bench:
        peer.admin('/_peer/config', {'build_delay': args['boot_time']})
        folder = write_dummy_infra(bench.folder, nodes, args['levels'], 0)
        section = {'type': 'nova', 'endpoint': f'{peer.url}/identity', 'project_id': PROJECT,
                   'image_id': IMAGE_ID, 'flavor_name': 'm1.tiny', 'network_id': NETWORK_ID}
        if extra['floating_ip']:
            section['floating_ip'] = 'yes'
        if extra['volume_size'] is not None:
            section['volume_size'] = extra['volume_size']
        (folder / 'nodes.yaml').write_text(json.dumps({'node_def:bench_node': [
            {'resource': section, 'health_check': {'ping': False}}]}))
        (folder / '.occopus').mkdir(exist_ok=True)
        (folder / '.occopus' / 'auth_data.yaml').write_text(json.dumps({'resource': [
            {'type': 'nova', 'auth_data': {'username': 'demo', 'password': USERS['demo']}}]}))
        imported = bench.run(command('occopus-import'), str(folder / 'nodes.yaml'))
        assert imported.returncode == 0, imported.stderr
        mode = ['--parallelize', '--parallelism', str(args['parallelism'])]
        start = peer.calls()
        result = bench.measure(command('occopus-build'), *([] if args['sequential'] else mode),
                               str(folder / 'infra.yaml'))
        assert result['exit_code'] == 0, result['stderr'][-2000:]
        infra_id = result['stdout'].strip().splitlines()[-1]
        built = peer.calls()
        servers = len(peer.admin(f'/_peer/state?project={PROJECT}')['servers'])
        destroyed = bench.measure(command('occopus-destroy'), '-i', infra_id)
        assert destroyed['exit_code'] == 0, destroyed['stderr'][-2000:]
        after = peer.calls()
        left = peer.admin(f'/_peer/state?project={PROJECT}')
    build_calls, destroy_calls = spent(start, built), spent(built, after)
    print(json.dumps(dict({
        'benchmark': 'build_nova', 'nodes': nodes, 'levels': args['levels'],
        'boot_time_s': args['boot_time'], 'floating_ip': extra['floating_ip'],
        'volume_size': extra['volume_size'],
        'mode': 'sequential' if args['sequential'] else 'parallel',
        'parallelism': 1 if args['sequential'] else args['parallelism']},
        **cloud_summary(nodes, result, destroyed, build_calls, destroy_calls),
        servers_built=servers,
        left_after_destroy=sum(len(left[k]) for k in ('servers', 'volumes', 'floating_ips')))))

if __name__ == '__main__':
    main()
