"""The REST service under load: ``occopus-rest-service`` against a private redis-server.

Measures, on an infrastructure of N dummy nodes (one instance each, zero boot time, L
dependency levels, built with ``parallelize: true``):

* the time from ``POST /infrastructures/`` to every instance ready (as ``GET`` shows it), and
  how long the POST itself took to answer;
* requests per second of ``GET /infrastructures/<id>`` from T threads, each with its own
  keep-alive ``requests.Session``, for S seconds (latency percentiles too);
* the same for ``POST /infrastructures/<id>/scaleup/<node>`` (requests recorded for the next
  pass; the node's max keeps the pass from creating anything);
* the ``DELETE`` and what is left after it.

Prints one JSON line.
Usage: .venv/bin/python benchmarks/rest_api.py [--nodes N] [--levels L] [--threads T]
       [--seconds S] [--interval I]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import requests

from _common import Bench, command, write_dummy_infra
from occo.localredis import free_port, stop_process


class Service:
    """One ``occopus-rest-service`` process of a :class:`Bench` (its Redis, its HOME)."""

    def __init__(self, bench: Bench, config: str, name: str = 'rest') -> None:
        self.bench, self.name = bench, name
        self.cfg = bench.folder / f'{name}.yaml'
        self.cfg.write_text(config)
        self.process: Optional[subprocess.Popen] = None
        self.url = ''

    def start(self, timeout: float = 30.0) -> 'Service':
        port = free_port()
        self.url = f'http://127.0.0.1:{port}'
        with open(self.bench.folder / f'{self.name}.log', 'ab') as log:
            self.process = subprocess.Popen(
                [command('occopus-rest-service'), '--cfg', str(self.cfg), '--port', str(port)],
                stdout=log, stderr=subprocess.STDOUT, env=self.bench.env, cwd=self.bench.folder)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                if requests.get(f'{self.url}/health', timeout=2).status_code == 200:
                    return self
            except requests.RequestException:
                time.sleep(0.05)
        raise SystemExit(f'occopus-rest-service did not start: {self.log()[-2000:]}')

    def stop(self) -> None:
        stop_process(self.process, grace=70)
        self.process = None

    def log(self) -> str:
        path = Path(self.bench.folder) / f'{self.name}.log'
        return path.read_text(errors='replace') if path.exists() else ''


def load(threads: int, seconds: float, request: Callable[[requests.Session], requests.Response]
         ) -> Dict[str, Any]:
    """``request`` in a loop from ``threads`` threads (a keep-alive session each) for
    ``seconds``: requests per second, latency percentiles (ms), and answers other than 200."""
    latencies: List[List[float]] = [[] for _ in range(threads)]
    errors = [0] * threads
    start = threading.Event()
    stop_at = [0.0]

    def worker(index: int) -> None:
        with requests.Session() as session:
            request(session)  # the connection is made before the clock starts
            start.wait()
            while time.perf_counter() < stop_at[0]:
                began = time.perf_counter()
                answer = request(session)
                latencies[index].append(time.perf_counter() - began)
                errors[index] += answer.status_code != 200

    pool = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(threads)]
    for thread in pool:
        thread.start()
    time.sleep(0.5)
    began = time.perf_counter()
    stop_at[0] = began + seconds
    start.set()
    for thread in pool:
        thread.join()
    wall = time.perf_counter() - began
    every = sorted(x for part in latencies for x in part)

    def percentile(p: float) -> Optional[float]:
        return round(1000 * every[min(len(every) - 1, int(p * len(every)))], 2) if every else None
    return {'requests': len(every), 'rps': round(len(every) / wall, 1), 'errors': sum(errors),
            'p50_ms': percentile(0.50), 'p90_ms': percentile(0.90), 'p99_ms': percentile(0.99),
            'max_ms': round(1000 * every[-1], 2) if every else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--nodes', type=int, default=100)
    parser.add_argument('--levels', type=int, default=5)
    parser.add_argument('--threads', type=int, default=4)
    parser.add_argument('--seconds', type=float, default=5.0)
    parser.add_argument('--interval', type=float, default=10.0,
                        help='seconds between the background manage passes (the default one)')
    args = parser.parse_args()
    with Bench() as bench:
        folder = write_dummy_infra(bench.folder, args.nodes, args.levels, 0.0)
        imported = bench.run(command('occopus-import'), str(folder / 'nodes.yaml'))
        assert imported.returncode == 0, imported.stderr
        service = Service(bench, f'rest: {{interval: {args.interval}}}\nparallelize: true\n').start()
        try:
            api = requests.Session()
            text = (folder / 'infra.yaml').read_bytes()
            began = time.perf_counter()
            answer = api.post(f'{service.url}/infrastructures/', data=text, timeout=120)
            posted = time.perf_counter() - began
            assert answer.status_code == 200, answer.text
            infra = answer.json()['infraid']
            while True:
                body = api.get(f'{service.url}/infrastructures/{infra}', timeout=60).json()
                ready = sum(i['state'] == 'ready' for n in body.values() for i in n['instances'].values())
                if ready == args.nodes:
                    break
                if time.perf_counter() - began > 300:
                    raise SystemExit(f'not all ready after 300 s: {ready} of {args.nodes}')
                time.sleep(0.01)
            all_ready = time.perf_counter() - began

            get = load(args.threads, args.seconds, lambda s: s.get(
                f'{service.url}/infrastructures/{infra}', timeout=60))
            size = len(api.get(f'{service.url}/infrastructures/{infra}', timeout=60).content)
            scaleup = load(args.threads, args.seconds, lambda s: s.post(
                f'{service.url}/infrastructures/{infra}/scaleup/n0', timeout=60))

            began = time.perf_counter()
            deleted = api.delete(f'{service.url}/infrastructures/{infra}', timeout=300)
            delete_s = time.perf_counter() - began
            assert deleted.status_code == 200, deleted.text
            gone = api.get(f'{service.url}/infrastructures/{infra}', timeout=60).status_code
        finally:
            service.stop()
        left = bench.redis.hlen('occo:dummycloud')
        keys_left = sum(1 for _ in bench.redis.scan_iter(match=f'occo:{{{infra}}}*', count=1000))
        crashed = 'Traceback' in service.log()
    print(json.dumps({
        'benchmark': 'rest_api', 'nodes': args.nodes, 'levels': args.levels,
        'threads': args.threads, 'seconds': args.seconds, 'pass_interval_s': args.interval,
        'post_answer_s': round(posted, 3), 'post_to_all_ready_s': round(all_ready, 3),
        'get_infra': dict(get, body_bytes=size), 'scaleup': scaleup,
        'delete_s': round(delete_s, 3), 'get_after_delete': gone,
        'resources_left': left, 'infra_keys_left': keys_left, 'traceback_in_log': crashed,
    }))


if __name__ == '__main__':
    main()
