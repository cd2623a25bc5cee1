"""A private, throw-away ``redis-server`` on a free loopback port.

Used by ``make demo`` (when no Redis is configured), the test suite, the benchmarks and
``.ci/run``.  Standard library only, so it runs before anything is installed::

    python3 -m occo.localredis -- make test     # runs the command with OCCOPUS_REDIS_URL set

The server keeps nothing on disk (no RDB, no AOF) unless extra ``args`` say otherwise, and is
stopped when the command ends, however it ends.  On Linux a server started from the main
thread also dies with the process that started it (``PR_SET_PDEATHSIG``), so a test run or a
helper killed with SIGKILL leaves no server behind; the work folder such a run leaves is
removed by the next server started on the machine.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable, List, Optional, Sequence

SEARCH_PATH = ('/usr/bin', '/usr/sbin', '/usr/local/bin')
WORKDIR_PREFIX = 'occo-redis-'
STALE_WORKDIR = re.compile(rf'{WORKDIR_PREFIX}(\d+)-')
PR_SET_PDEATHSIG = 1

USAGE = 'usage: python -m occo.localredis [--cluster | --sentinel] [--] COMMAND [ARG...]'
HELP = f"""{USAGE}

Run COMMAND beside a private, throw-away redis-server on a free port of 127.0.0.1, with
OCCOPUS_REDIS_URL and OCCOPUS_TEST_REDIS_URL pointing at it. The server keeps nothing on
disk and is stopped when COMMAND ends (or fails to start, or this helper is interrupted);
the exit code is COMMAND's (127: not found, 126: cannot be run, 128+N: ended by signal N).

Put -- before a COMMAND that starts with '-'.

options:
  -h, --help  show this help and exit
  --cluster   a Redis Cluster of three primaries instead (redis+cluster:// URL)
  --sentinel  a primary, two replicas and three Sentinels instead (redis+sentinel:// URL)
"""


class RedisServerError(RuntimeError):
    """redis-server is missing or would not start."""


class _Interrupted(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def stop_process(process: Optional[subprocess.Popen], grace: float = 10) -> None:
    """Stop a child process: SIGTERM, then SIGKILL if it is still there after ``grace`` s."""
    if process is not None and process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=grace)


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


def _die_with_parent() -> Optional[Callable[[], None]]:
    """A ``preexec_fn`` that makes Linux send the child SIGTERM when this process dies, or
    None where that cannot be had.  Linux ties it to the thread that starts the child, so it
    is used from the main thread only (a server started by a short-lived thread would die
    with the thread)."""
    if not sys.platform.startswith('linux') or threading.current_thread() is not threading.main_thread():
        return None
    try:
        import ctypes
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (ImportError, OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the request was made
            os._exit(1)
    return preexec


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_workdirs() -> None:
    """Remove the work folders of servers whose starting process is gone (killed runs)."""
    top = tempfile.gettempdir()
    try:
        names = os.listdir(top)
    except OSError:
        return
    for name in names:
        match = STALE_WORKDIR.match(name)
        if match and not _alive(int(match.group(1))):
            shutil.rmtree(os.path.join(top, name), ignore_errors=True)


class RedisServer:
    """A ``redis-server`` child process; use as a context manager or call start/stop.

    ``args`` are further ``redis-server`` options, after (so overriding) ours, e.g.
    ``['--appendonly', 'yes']``.  Stopped with ``stop(remove=False)``, it starts again on the
    same port with the data it kept in ``workdir``.  With ``die_with_parent`` (the default) a
    server started from the main thread on Linux ends when this process does, even by SIGKILL.
    """

    def __init__(self, port: Optional[int] = None, workdir: Optional[str] = None,
                 args: Sequence[str] = (), die_with_parent: bool = True,
                 config: Sequence[str] = ()) -> None:
        self.port = port
        self.workdir = workdir
        self.args = list(args)
        #: what goes before our options: a configuration file (and e.g. ``--sentinel``)
        self.config = list(config)
        self.die_with_parent = die_with_parent
        self._own_workdir = False
        self.process: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        return f'redis://127.0.0.1:{self.port}/0'

    def start(self, timeout: float = 15.0) -> str:
        """Start the server and wait until it answers; returns its URL."""
        binary = redis_server_binary()
        if self.workdir is None:
            remove_stale_workdirs()
            self.workdir = tempfile.mkdtemp(prefix=f'{WORKDIR_PREFIX}{os.getpid()}-')
            self._own_workdir = True
        preexec = _die_with_parent() if self.die_with_parent else None
        for _ in range(5):  # another process may grab the free port first
            self.port = self.port or free_port()
            self.process = subprocess.Popen(
                [binary] + self.config + ['--port', str(self.port), '--bind', '127.0.0.1', '--save', '',
                 '--appendonly', 'no', '--dir', self.workdir, '--daemonize', 'no',
                 '--logfile', os.path.join(self.workdir, 'redis.log')] + self.args,
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True, preexec_fn=preexec)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.process.poll() is None:
                if _answers_ping(self.port):
                    return self.url
                time.sleep(0.05)
            self.stop(remove=False)
            self.port = None
        raise RedisServerError(f'redis-server would not start (see {self.workdir}/redis.log)')

    def stop(self, remove: bool = True) -> None:
        stop_process(self.process)
        self.process = None
        if remove and self._own_workdir and self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> 'RedisServer':
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def command(port: int, *args: str, timeout: float = 2.0) -> bytes:
    """One command to the server at 127.0.0.1:``port``; its raw RESP reply (a short one)."""
    request = f'*{len(args)}\r\n'.encode() + b''.join(
        f'${len(a.encode())}\r\n'.encode() + a.encode() + b'\r\n' for a in args)
    with socket.create_connection(('127.0.0.1', port), timeout=timeout) as sock:
        sock.sendall(request)
        reply = b''
        while True:
            chunk = sock.recv(65536)
            reply += chunk
            if not chunk or _complete(reply):
                return reply


def _complete(reply: bytes) -> bool:
    if reply[:1] == b'$':
        size, _, rest = reply[1:].partition(b'\r\n')
        return int(size) < 0 or len(rest) >= int(size) + 2
    return reply.endswith(b'\r\n')


class _Group:
    """Servers started together and stopped together, each in a work folder of its own under
    one folder of the group."""

    def __init__(self, label: str) -> None:
        self.servers: List[RedisServer] = []
        self.label = label
        self.workdir: Optional[str] = None

    def _server(self, args: Sequence[str] = (), config: Sequence[str] = ()) -> RedisServer:
        if self.workdir is None:
            remove_stale_workdirs()
            self.workdir = tempfile.mkdtemp(prefix=f'{WORKDIR_PREFIX}{os.getpid()}-{self.label}-')
        folder = os.path.join(self.workdir, str(len(self.servers)))
        os.mkdir(folder)
        server = RedisServer(workdir=folder, args=args, config=config)
        self.servers.append(server)
        server.start()
        return server

    def stop(self) -> None:
        for server in reversed(self.servers):
            server.stop(remove=False)
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> '_Group':
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> str:
        raise NotImplementedError

    def _wait(self, ready: Callable[[], bool], what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if time.monotonic() > deadline:
                raise RedisServerError(f'{what} within {timeout:g} s (see the logs under '
                                       f'{self.workdir})')
            time.sleep(0.1)


class LocalCluster(_Group):
    """A Redis Cluster of ``primaries`` primaries (``replicas`` replicas each) on free
    loopback ports, made with ``redis-cli --cluster create``; its URL is
    ``redis+cluster://127.0.0.1:PORT,...``."""

    def __init__(self, primaries: int = 3, replicas: int = 0) -> None:
        super().__init__('cluster')
        self.primaries, self.replicas = primaries, replicas

    @property
    def url(self) -> str:
        return 'redis+cluster://' + ','.join(f'127.0.0.1:{s.port}' for s in self.servers)

    def start(self, timeout: float = 30.0) -> str:
        for _ in range(self.primaries * (1 + self.replicas)):
            self._server(['--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf',
                          '--cluster-node-timeout', '1000'])
        cli = os.path.join(os.path.dirname(redis_server_binary()), 'redis-cli')
        made = subprocess.run(
            [cli if os.access(cli, os.X_OK) else 'redis-cli', '--cluster', 'create']
            + [f'127.0.0.1:{s.port}' for s in self.servers]
            + ['--cluster-replicas', str(self.replicas), '--cluster-yes'],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
        if made.returncode != 0:
            raise RedisServerError(f'redis-cli --cluster create failed: {made.stdout[-300:]}')
        self._wait(lambda: all(b'cluster_state:ok' in command(s.port, 'CLUSTER', 'INFO')
                               for s in self.servers), 'the cluster was not ready', timeout)
        return self.url


class LocalSentinel(_Group):
    """A primary with ``replicas`` replicas and ``sentinels`` Sentinels (quorum: a majority)
    watching it as ``service``, which call it down after ``down_after`` ms; its URL is
    ``redis+sentinel://127.0.0.1:PORT,.../SERVICE/0``."""

    def __init__(self, replicas: int = 2, sentinels: int = 3, service: str = 'occo',
                 down_after: int = 1000) -> None:
        super().__init__('sentinel')
        self.replica_count, self.sentinel_count = replicas, sentinels
        self.service, self.down_after = service, down_after
        self.data: List[RedisServer] = []
        self.sentinels: List[RedisServer] = []

    @property
    def url(self) -> str:
        return ('redis+sentinel://' + ','.join(f'127.0.0.1:{s.port}' for s in self.sentinels)
                + f'/{self.service}/0')

    def start(self, timeout: float = 30.0) -> str:
        quick = ['--repl-diskless-sync-delay', '0']
        primary = self._server(quick)
        self.data = [primary] + [self._server(quick + ['--replicaof', '127.0.0.1', str(primary.port)])
                                 for _ in range(self.replica_count)]
        quorum = self.sentinel_count // 2 + 1
        for index in range(self.sentinel_count):
            config = os.path.join(self.workdir, f'sentinel{index}.conf')
            with open(config, 'w', encoding='ascii') as stream:
                stream.write(f'sentinel monitor {self.service} 127.0.0.1 {primary.port} {quorum}\n'
                             f'sentinel down-after-milliseconds {self.service} {self.down_after}\n'
                             f'sentinel failover-timeout {self.service} 20000\n'
                             f'sentinel parallel-syncs {self.service} 1\n')
            self.sentinels.append(self._server(config=[config, '--sentinel']))
        self._wait(lambda: all(b'master_link_status:up' in command(r.port, 'INFO', 'replication')
                               for r in self.data[1:]), 'the replicas did not sync', timeout)
        return self.url

    def primary(self) -> RedisServer:
        """The data server the Sentinels name as primary now."""
        reply = command(self.sentinels[0].port, 'SENTINEL', 'get-master-addr-by-name', self.service)
        port = int(reply.split(b'\r\n')[-2])
        return next(s for s in self.data if s.port == port)

    def settled(self) -> bool:
        """Whether a failover is over: every Sentinel names the same primary, and every other
        live data server replicates from it with its link up."""
        try:
            named = {command(s.port, 'SENTINEL', 'get-master-addr-by-name', self.service)
                     for s in self.sentinels}
            if len(named) != 1:
                return False
            primary = self.primary()
            for server in self.data:
                if server is primary or server.process is None or server.process.poll() is not None:
                    continue
                info = command(server.port, 'INFO', 'replication')
                if f'master_port:{primary.port}\r\n'.encode() not in info or \
                        b'master_link_status:up' not in info:
                    return False
            return True
        except (OSError, ValueError, StopIteration):
            return False

    def kill_primary(self) -> RedisServer:
        """SIGKILL the primary (as a crash would); returns the server that was killed."""
        primary = self.primary()
        if primary.process is not None:
            primary.process.kill()
            primary.process.wait()
        return primary


def _error(text: str) -> None:
    print(f'occo.localredis: error: {text}', file=sys.stderr)


def main(argv: Optional[List[str]] = None) -> int:
    """``python -m occo.localredis [--] COMMAND...``: run COMMAND beside a private Redis."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ('-h', '--help'):
        print(HELP, end='')
        return 0
    server: Any = RedisServer()
    if argv and argv[0] in ('--cluster', '--sentinel'):
        server = LocalCluster() if argv.pop(0) == '--cluster' else LocalSentinel()
    if argv and argv[0] == '--':
        argv = argv[1:]
    elif argv and argv[0].startswith('-'):
        print(USAGE, file=sys.stderr)
        _error(f'unknown option {argv[0]} (put -- before a command that starts with -)')
        return 2
    if not argv:
        print(USAGE, file=sys.stderr)
        return 2
    child: Optional[subprocess.Popen] = None
    held: List[int] = []  # signals held while the command starts or the server stops
    holding = [False]

    def on_signal(signum: int, frame: object) -> None:
        if child is not None and child.poll() is None:
            child.send_signal(signum)  # the command decides; we stop when it has ended
        elif holding[0]:
            held.append(signum)
        else:
            raise _Interrupted(signum)

    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {s: signal.signal(s, on_signal) for s in handled}
    try:
        try:
            url = server.start()
        except BaseException:
            server.stop()
            raise
        env = dict(os.environ, OCCOPUS_REDIS_URL=url, OCCOPUS_TEST_REDIS_URL=url)
        print(f'occo.localredis: private redis-server at {url}', file=sys.stderr)
        holding[0] = True  # a signal now must not leave the command running unwatched
        try:
            child = subprocess.Popen(argv, env=env)
        except FileNotFoundError:
            _error(f'command not found: {argv[0]}')
            return 127
        except OSError as exc:
            _error(f'cannot run {argv[0]}: {exc.strerror or exc}')
            return 126
        for signum in held:
            child.send_signal(signum)
        held.clear()
        holding[0] = False
        code = child.wait()
        return 128 - code if code < 0 else code
    except RedisServerError as exc:
        _error(str(exc))
        return 1
    except _Interrupted as exc:
        return 128 + exc.signum
    except Exception as exc:  # noqa: BLE001 - one line, and the server is stopped all the same
        _error(f'{type(exc).__name__}: {exc}')
        return 1
    finally:
        holding[0] = True  # the server is being stopped: let it finish
        try:
            server.stop()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


if __name__ == '__main__':
    sys.exit(main())
