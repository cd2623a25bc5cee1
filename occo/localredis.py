"""A private, throw-away ``redis-server`` on a free loopback port.

Used by ``make demo`` (when no Redis is configured), the test suite, the benchmarks and
``.ci/run``.  Standard library only, so it runs before anything is installed::

    python3 -m occo.localredis -- make test     # runs the command with OCCOPUS_REDIS_URL set

The server keeps nothing on disk (no RDB, no AOF) unless extra ``args`` say otherwise, and is
stopped when the command ends.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import List, Optional, Sequence

SEARCH_PATH = ('/usr/bin', '/usr/sbin', '/usr/local/bin')


class RedisServerError(RuntimeError):
    """redis-server is missing or would not start."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def redis_server_binary() -> str:
    found = shutil.which('redis-server') or next(
        (os.path.join(d, 'redis-server') for d in SEARCH_PATH
         if os.access(os.path.join(d, 'redis-server'), os.X_OK)), None)
    if not found:
        raise RedisServerError('redis-server not found: install it (Debian/Ubuntu: '
                               'apt-get install redis-server) or set OCCOPUS_REDIS_URL')
    return found


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(('127.0.0.1', port), timeout=0.5) as sock:
            sock.sendall(b'PING\r\n')
            return sock.recv(16).startswith(b'+PONG')
    except OSError:
        return False


class RedisServer:
    """A ``redis-server`` child process; use as a context manager or call start/stop.

    ``args`` are further ``redis-server`` options, after (so overriding) ours, e.g.
    ``['--appendonly', 'yes']``.  Stopped with ``stop(remove=False)``, it starts again on the
    same port with the data it kept in ``workdir``.
    """

    def __init__(self, port: Optional[int] = None, workdir: Optional[str] = None,
                 args: Sequence[str] = ()) -> None:
        self.port = port
        self.workdir = workdir
        self.args = list(args)
        self._own_workdir = False
        self.process: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        return f'redis://127.0.0.1:{self.port}/0'

    def start(self, timeout: float = 15.0) -> str:
        """Start the server and wait until it answers; returns its URL."""
        binary = redis_server_binary()
        if self.workdir is None:
            self.workdir = tempfile.mkdtemp(prefix='occo-redis-')
            self._own_workdir = True
        for _ in range(5):  # another process may grab the free port first
            self.port = self.port or free_port()
            self.process = subprocess.Popen(
                [binary, '--port', str(self.port), '--bind', '127.0.0.1', '--save', '',
                 '--appendonly', 'no', '--dir', self.workdir, '--daemonize', 'no',
                 '--logfile', os.path.join(self.workdir, 'redis.log')] + self.args,
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.process.poll() is None:
                if _answers_ping(self.port):
                    return self.url
                time.sleep(0.05)
            self.stop(remove=False)
            self.port = None
        raise RedisServerError(f'redis-server would not start (see {self.workdir}/redis.log)')

    def stop(self, remove: bool = True) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        if remove and self._own_workdir and self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> 'RedisServer':
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: Optional[List[str]] = None) -> int:
    """``python -m occo.localredis [--] COMMAND...``: run COMMAND beside a private Redis."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == '--':
        argv = argv[1:]
    if not argv:
        print('usage: python -m occo.localredis [--] COMMAND [ARG...]', file=sys.stderr)
        return 2
    try:
        server = RedisServer()
        url = server.start()
    except RedisServerError as exc:
        print(f'occo.localredis: error: {exc}', file=sys.stderr)
        return 1
    env = dict(os.environ, OCCOPUS_REDIS_URL=url, OCCOPUS_TEST_REDIS_URL=url)
    print(f'occo.localredis: private redis-server at {url}', file=sys.stderr)
    child = subprocess.Popen(argv, env=env)
    forward = lambda signum, frame: child.send_signal(signum)  # noqa: E731
    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.stop()


if __name__ == '__main__':
    sys.exit(main())
