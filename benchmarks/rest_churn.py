"""create -> delete churn through the REST API: does a deleted infrastructure ever come back?

N cycles (default 1000) of ``POST /infrastructures/`` (a one-node dummy infrastructure)
followed at once by ``DELETE /infrastructures/<id>`` (with ``--wait-ready``: once its instance
is ready; by default the DELETE usually lands while the build runs, and cancels it). After
each DELETE, ``GET /infrastructures/<id>`` must answer 404 and ``GET /infrastructures/`` must
not list it. Halfway and at the end the service is restarted (SIGTERM, then a new process on
the same Redis) and every infrastructure deleted so far is checked again: not listed, not
served (404). At the end the dummy cloud and Redis must hold nothing of any of them.

A failure is any of: a POST or DELETE not answered 200, a GET after DELETE not answered 404,
a deleted id in a list, a resource or key left at the end.

Prints one JSON line: cycles, failures (must be 0) with the first few told, cycles per second
(over the cycles alone, without the restarts and the checks after them), and the wall time.
Usage: .venv/bin/python benchmarks/rest_churn.py [--cycles N] [--wait-ready] [--interval I]
"""
from __future__ import annotations

import argparse
import json
import time
from typing import Any, Dict, List, Set

import requests

from _common import Bench, command
from rest_api import Service

NODES = "'node_def:churn':\n  - resource: {type: dummy, boot_time: 0}\n    health_check: {ping: false}\n"
INFRA = b'infra_name: churn\nuser_id: churn@example.com\nnodes:\n  - {name: only, type: churn}\n'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--cycles', type=int, default=1000)
    parser.add_argument('--wait-ready', action='store_true',
                        help='delete each infrastructure once its instance is ready')
    parser.add_argument('--interval', type=float, default=0.5,
                        help='seconds between the background manage passes')
    args = parser.parse_args()
    failures: List[str] = []
    deleted: List[str] = []
    stats: Dict[str, Any] = {'restarts': 0, 'checked_after_restart': 0}
    began = time.perf_counter()
    cycling = 0.0
    with Bench() as bench:
        (bench.folder / 'nodes.yaml').write_text(NODES)
        imported = bench.run(command('occopus-import'), str(bench.folder / 'nodes.yaml'))
        assert imported.returncode == 0, imported.stderr
        service = Service(bench, f'rest: {{interval: {args.interval}}}\n').start()
        api = requests.Session()

        def fail(message: str) -> None:
            failures.append(message)

        def check_all_gone(when: str) -> None:
            listed = set(api.get(f'{service.url}/infrastructures/', timeout=60).json()['infrastructures'])
            for infra in sorted(listed & set(deleted)):
                fail(f'{when}: deleted {infra} is listed')
            for infra in deleted:
                status = api.get(f'{service.url}/infrastructures/{infra}', timeout=60).status_code
                if status != 404:
                    fail(f'{when}: deleted {infra} answered {status}')
            stats['checked_after_restart'] += len(deleted)

        def restart(when: str) -> None:
            nonlocal service
            service.stop()
            service = Service(bench, f'rest: {{interval: {args.interval}}}\n').start()
            stats['restarts'] += 1
            check_all_gone(when)

        try:
            for cycle in range(args.cycles):
                started = time.perf_counter()
                answer = api.post(f'{service.url}/infrastructures/', data=INFRA, timeout=120)
                if answer.status_code != 200:
                    fail(f'cycle {cycle}: POST answered {answer.status_code}: {answer.text[:200]}')
                    continue
                infra = answer.json()['infraid']
                if args.wait_ready:
                    while True:
                        body = api.get(f'{service.url}/infrastructures/{infra}', timeout=60).json()
                        if [i['state'] for n in body.values() for i in n['instances'].values()] == ['ready']:
                            break
                        time.sleep(0.01)
                gone = api.delete(f'{service.url}/infrastructures/{infra}', timeout=120)
                if gone.status_code != 200:
                    fail(f'cycle {cycle}: DELETE answered {gone.status_code}: {gone.text[:200]}')
                deleted.append(infra)
                status = api.get(f'{service.url}/infrastructures/{infra}', timeout=60).status_code
                if status != 404:
                    fail(f'cycle {cycle}: GET after DELETE answered {status}')
                listed = api.get(f'{service.url}/infrastructures/', timeout=60).json()['infrastructures']
                if infra in listed:
                    fail(f'cycle {cycle}: listed after DELETE')
                cycling += time.perf_counter() - started
                if cycle + 1 == args.cycles // 2:
                    restart(f'after the restart at cycle {cycle + 1}')
            restart('after the final restart')
        finally:
            service.stop()
        ids: Set[str] = set(deleted)
        resources = [r for r in bench.redis.hvals('occo:dummycloud') if json.loads(r)['infra_id'] in ids]
        keys = [k for k in bench.redis.scan_iter(match='occo:{*', count=1000)
                if k.split('{', 1)[1].split('}', 1)[0] in ids]
        registry = [i for i in bench.redis.hkeys('occo:infras') if i in ids]
        if resources:
            fail(f'{len(resources)} dummy resources left')
        if keys or registry:
            fail(f'{len(keys)} keys and {len(registry)} registry entries left, e.g. {(keys + registry)[:3]}')
        crashed = 'Traceback' in service.log()
    print(json.dumps({
        'benchmark': 'rest_churn', 'cycles': args.cycles, 'deleted': len(deleted),
        'mode': 'delete when ready' if args.wait_ready else 'delete at once',
        'failures': len(failures), 'first_failures': failures[:5],
        'cycles_per_s': round(len(deleted) / cycling, 2) if cycling else None,
        'ms_per_cycle': round(1000 * cycling / len(deleted), 2) if deleted else None,
        'restarts': stats['restarts'], 'checked_after_restarts': stats['checked_after_restart'],
        'resources_left': len(resources), 'keys_left': len(keys) + len(registry),
        'traceback_in_log': crashed, 'wall_s': round(time.perf_counter() - began, 2),
    }))


if __name__ == '__main__':
    main()
