"""Session fixtures for the docker tests: a real Docker Engine API, served by podman.

``docker_peer`` starts ``podman system service`` (runtime runc) on a unix socket, once per test
process, with everything of its own under a temporary folder: image and container storage
(``--root``, ``--runroot``, driver vfs), its lock files and temporary files (``--tmpdir``, file
locks), its configuration (``CONTAINERS_CONF``, ``CONTAINERS_REGISTRIES_CONF``) and its network:
a CNI bridge of its own name without a gateway address, masquerading or firewall rules, so that
containers reach each other and nothing else, and the host gets no route.  The machine's own
podman storage, networks and registries are never used; registries are blocked (there is no
network here), so a pull of an unknown image fails at once without leaving the machine.

The test image is a busybox (Debian's ``busybox-static``) with ``/root/start.sh``, the tutorials'
command: it writes ``$message`` to ``/tmp/message``, pings ``$target_ip`` twice if it is set
(``/tmp/ping.rc`` holds ping's exit code), then sleeps.  It is imported as ``busybox_helloworld``
(the tutorials' image, for ``origin: local``) and is also served as a tarball over loopback HTTP
(``docker_peer.tarball_url()``) for the tutorials' ``origin: <url>``.

At the end of the session every container is removed, the service and every process started
for it end, the bridge is deleted and the folder removed.  Where podman, runc or busybox is
missing, or the service cannot run a container here, the tests that use the peer are skipped
with the reason.
"""
from __future__ import annotations

import http.server
import io
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import tarfile
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest

from occo.localredis import stop_process

IMAGE = 'busybox_helloworld'
START_SH = """#!/bin/sh
echo "$message" > /tmp/message
if [ -n "$target_ip" ]; then
    ping -c 2 -w 10 "$target_ip" > /tmp/ping.log 2>&1
    echo $? > /tmp/ping.rc
fi
exec sleep 1000000
"""
APPLETS = ('sh', 'sleep', 'cat', 'echo', 'ping', 'ls', 'env', 'kill', 'true', 'false')
START_WAIT = 30.0  # seconds for the service to answer
PODMAN_STOP = 60   # seconds for one podman command at the end


def find_busybox() -> Optional[str]:
    """A statically linked busybox (the image has no libraries)."""
    for candidate in (shutil.which('busybox'), '/bin/busybox', '/usr/bin/busybox'):
        if candidate and os.path.exists(candidate):
            with open(candidate, 'rb') as stream:
                head = stream.read(8192)
            if b'ld-linux' not in head and b'ld-musl' not in head:
                return candidate
    return None


def rootfs_tarball(busybox: str) -> bytes:
    """The test image's root file system, as a tar archive."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode='w') as tar:
        def add(name: str, kind: bytes, mode: int, data: bytes = b'', link: str = '') -> None:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime, info.linkname = kind, mode, 0, link
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data else None)
        for folder in ('bin', 'root', 'tmp', 'etc'):
            add(folder, tarfile.DIRTYPE, 0o1777 if folder == 'tmp' else 0o755)
        add('bin/busybox', tarfile.REGTYPE, 0o755, Path(busybox).read_bytes())
        for applet in APPLETS:
            add(f'bin/{applet}', tarfile.SYMTYPE, 0o777, link='busybox')
        add('root/start.sh', tarfile.REGTYPE, 0o755, START_SH.encode())
        add('etc/passwd', tarfile.REGTYPE, 0o644, b'root:x:0:0:root:/root:/bin/sh\n')
    return buffer.getvalue()


class TarballServer:
    """Serves ``files`` (name -> bytes) over HTTP on a free loopback port; anything else is
    404."""

    def __init__(self, files: Dict[str, bytes]) -> None:
        served = files

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                data = served.get(self.path.lstrip('/'))
                self.send_response(200 if data is not None else 404)
                body = data if data is not None else b'not found\n'
                self.send_header('Content-Length', str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass
        self.files = files
        self.server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        return f'http://127.0.0.1:{self.server.server_address[1]}/{name}'

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class HoldingProxy:
    """A unix-socket proxy in front of the engine that holds the first request whose request
    line matches ``hold`` until :attr:`release` is set (:attr:`held` tells that it came), and
    answers ``fail`` (HTTP status) to the first ``fail_times`` requests matching ``fail``.
    Requests are read one at a time per connection (head plus ``Content-Length`` body), as
    the docker SDK sends them."""

    def __init__(self, target: str, folder: Path, *, hold: Optional[str] = None,
                 fail: Optional[str] = None, status: int = 503, fail_times: int = 1) -> None:
        self.target = target
        self.path = str(folder / f'proxy-{os.getpid()}-{id(self)}.sock')
        self.hold = re.compile(hold) if hold else None
        self.fail = re.compile(fail) if fail else None
        self.status, self.fail_times = status, fail_times
        self.held, self.release = threading.Event(), threading.Event()
        self.failed = 0
        self.lock = threading.Lock()
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        self.listener.listen(16)
        self.closing = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f'unix://{self.path}'

    def __enter__(self) -> 'HoldingProxy':
        return self

    def __exit__(self, *exc: Any) -> None:
        self.closing = True
        self.release.set()
        self.listener.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass

    def _accept(self) -> None:
        while not self.closing:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            upstream.connect(self.target)
            threading.Thread(target=_pipe, args=(upstream, client), daemon=True).start()
            reader = client.makefile('rb')
            while True:
                head = b''
                while not head.endswith(b'\r\n\r\n'):
                    line = reader.readline(65536)
                    if not line:
                        return
                    head += line
                length = re.search(rb'(?im)^content-length:\s*(\d+)', head)
                body = reader.read(int(length.group(1))) if length else b''
                request_line = head.split(b'\r\n', 1)[0].decode('latin-1')
                if self.fail and self.fail.search(request_line):
                    with self.lock:
                        failing = self.failed < self.fail_times
                        self.failed += failing
                    if failing:
                        text = b'{"message": "injected by the test proxy"}'
                        client.sendall(b'HTTP/1.1 %d Injected\r\nContent-Type: application/json\r\n'
                                       b'Content-Length: %d\r\n\r\n%s' % (self.status, len(text), text))
                        continue
                if self.hold and self.hold.search(request_line) and not self.held.is_set():
                    self.held.set()
                    self.release.wait(120)
                upstream.sendall(head + body)
        except OSError:
            return
        finally:
            for end in (client, upstream):
                try:
                    end.close()
                except OSError:
                    pass


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    try:
        while True:
            data = source.recv(65536)
            if not data:
                break
            sink.sendall(data)
    except OSError:
        pass
    finally:
        try:
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass


class PodmanPeer:
    """A private podman service speaking the Docker Engine API on a unix socket."""

    def __init__(self, folder: Path, busybox: str) -> None:
        self.folder = folder
        self.socket = folder / 'podman.sock'
        self.endpoint = f'unix://{self.socket}'
        suffix = os.getpid() % 1000000
        self.network = f'occotest{suffix}'
        self.bridge = f'occo{suffix}'
        self.subnet = f'10.199.{suffix % 250 + 1}.0/24'
        self.tarball = rootfs_tarball(busybox)
        self.process: Optional[subprocess.Popen] = None
        self.http: Optional[TarballServer] = None
        self._configure()

    # -- setting up ---------------------------------------------------------------------------

    def _configure(self) -> None:
        folder = self.folder
        for name in ('root', 'run', 'tmp', 'net', 'ipam'):
            (folder / name).mkdir()
        # Without CAP_SYS_RESOURCE a container may not get limits above ours: podman's defaults
        # (nofile 1048576) would make runc fail.
        limits = [f'{name}={value}:{value}' for name, which, wanted in
                  (('nofile', resource.RLIMIT_NOFILE, 4096), ('nproc', resource.RLIMIT_NPROC, 8192))
                  for value in [_within(which, wanted)]]
        (folder / 'containers.conf').write_text(
            '[containers]\n'
            f'default_ulimits = [{", ".join(repr(x).replace(chr(39), chr(34)) for x in limits)}]\n'
            '[engine]\n'
            'runtime = "runc"\n'
            'cgroup_manager = "cgroupfs"\n'
            'events_logger = "file"\n'
            f'events_logfile_path = "{folder}/events.log"\n'
            'lock_type = "file"\n'
            '[network]\n'
            'network_backend = "cni"\n'
            f'network_config_dir = "{folder}/net"\n'
            f'default_network = "{self.network}"\n')
        (folder / 'registries.conf').write_text(
            'unqualified-search-registries = []\n'
            'short-name-mode = "disabled"\n'
            + ''.join(f'[[registry]]\nprefix = "{r}"\nlocation = "{r}"\nblocked = true\n'
                      for r in ('docker.io', 'quay.io', 'ghcr.io', 'registry.fedoraproject.org',
                                'registry.access.redhat.com', 'gcr.io', 'registry.k8s.io')))
        (folder / 'net' / f'{self.network}.conflist').write_text(
            '{"cniVersion": "0.4.0", "name": "%s", "plugins": [{"type": "bridge", "bridge": "%s", '
            '"isGateway": false, "ipMasq": false, "hairpinMode": true, "ipam": {"type": '
            '"host-local", "dataDir": "%s", "ranges": [[{"subnet": "%s"}]]}}]}\n'
            % (self.network, self.bridge, folder / 'ipam', self.subnet))
        (folder / 'image.tar').write_bytes(self.tarball)

    @property
    def env(self) -> Dict[str, str]:
        return dict(os.environ, CONTAINERS_CONF=str(self.folder / 'containers.conf'),
                    CONTAINERS_REGISTRIES_CONF=str(self.folder / 'registries.conf'),
                    TMPDIR=str(self.folder / 'tmp'))

    def podman_command(self, *args: str) -> List[str]:
        folder = self.folder
        return ['podman', '--root', str(folder / 'root'), '--runroot', str(folder / 'run'),
                '--tmpdir', str(folder / 'tmp'), '--storage-driver', 'vfs', '--runtime', 'runc',
                *args]

    def podman(self, *args: str, timeout: float = PODMAN_STOP) -> subprocess.CompletedProcess:
        return subprocess.run(self.podman_command(*args), capture_output=True, text=True,
                              env=self.env, timeout=timeout, stdin=subprocess.DEVNULL)

    def start(self) -> None:
        imported = self.podman('import', '--change', 'CMD ["sh"]', str(self.folder / 'image.tar'),
                               f'{IMAGE}:latest')
        if imported.returncode != 0:
            raise PeerUnavailable(f'podman import failed: {imported.stderr.strip()[-500:]}')
        log = open(self.folder / 'service.log', 'wb')
        self.process = subprocess.Popen(
            self.podman_command('system', 'service', '--time=0', self.endpoint), env=self.env,
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        deadline = time.monotonic() + START_WAIT
        while True:
            try:
                self.client().ping()
                break
            except Exception as exc:  # noqa: BLE001 - retried until the deadline
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise PeerUnavailable(f'podman system service did not answer ({exc}): '
                                          f'{self.log_tail()}') from None
                time.sleep(0.1)
        self._smoke_test()
        # the tutorials' two tarballs (docker-ping's sender uses busybox_ping)
        self.http = TarballServer({f'{IMAGE}.tar': self.tarball, 'busybox_ping.tar': self.tarball})

    def _smoke_test(self) -> None:
        """One container started and removed: the service runs, but can it run containers?"""
        client = self.client()
        try:
            made = client.create_container(f'{IMAGE}:latest', command=['true'], name='occo-smoke-test')
            client.start(made['Id'])
        except Exception as exc:  # noqa: BLE001 - said in the skip reason
            raise PeerUnavailable(f'podman cannot start a container here: {exc}') from None
        finally:
            subprocess.run(self.podman_command('rm', '-f', 'occo-smoke-test'), env=self.env,
                           capture_output=True, timeout=PODMAN_STOP)

    def log_tail(self) -> str:
        try:
            return (self.folder / 'service.log').read_text(errors='replace').strip()[-800:]
        except OSError:
            return ''

    # -- using it -------------------------------------------------------------------------------

    def client(self, endpoint: Optional[str] = None) -> Any:
        """A docker SDK low-level client of the service (or of ``endpoint``)."""
        import docker
        return docker.APIClient(base_url=endpoint or self.endpoint, version='1.41', timeout=30)

    def containers(self, infra_id: Optional[str] = None) -> List[Dict[str, Any]]:
        """Every container (any state), of one infrastructure if given, inspected."""
        client = self.client()
        filters = {'label': f'occopus.infra_id={infra_id}'} if infra_id else {}
        return [client.inspect_container(c['Id']) for c in client.containers(all=True, filters=filters)]

    def run_in(self, container_id: str, *command: str) -> str:
        client = self.client()
        run = client.exec_create(container_id, list(command))
        return client.exec_start(run['Id']).decode(errors='replace')

    def tarball_url(self, name: str = f'{IMAGE}.tar') -> str:
        assert self.http is not None
        return self.http.url(name)

    def remove_image(self, name: str) -> None:
        self.podman('rmi', '-f', name)

    # -- tearing down ---------------------------------------------------------------------------

    def stop(self) -> None:
        if self.http is not None:
            self.http.close()
        try:
            self.podman('rm', '-a', '-f', '-t', '0')
        except (OSError, subprocess.TimeoutExpired):
            pass
        stop_process(self.process)
        # conmon (and exec sessions' conmon) of our containers: found by our folder
        for pid in _processes_mentioning(str(self.folder)):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        for mount in reversed(_mounts_under(str(self.folder))):
            subprocess.run(['umount', '-l', mount], capture_output=True)
        if Path(f'/sys/class/net/{self.bridge}').exists():
            subprocess.run(['ip', 'link', 'delete', self.bridge], capture_output=True)
        shutil.rmtree(self.folder, ignore_errors=True)


class PeerUnavailable(Exception):
    """No Docker engine can run here (said in the skip reason)."""


def _within(which: int, wanted: int) -> int:
    soft, hard = resource.getrlimit(which)
    return wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)


def _processes_mentioning(marker: str) -> List[int]:
    found = []
    for entry in os.listdir('/proc'):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                with open(f'/proc/{entry}/cmdline', 'rb') as stream:
                    if marker.encode() in stream.read():
                        found.append(int(entry))
            except OSError:
                continue
    return found


def _mounts_under(folder: str) -> List[str]:
    try:
        with open('/proc/mounts') as stream:
            return [line.split()[1] for line in stream if line.split()[1].startswith(folder + '/')]
    except OSError:
        return []


@pytest.fixture(scope='session')
def docker_peer() -> Iterator[PodmanPeer]:
    """podman's Docker API on a private unix socket (skips with the reason where no engine can
    run)."""
    missing = [name for name in ('podman', 'runc') if shutil.which(name) is None and
               not os.path.exists(f'/usr/sbin/{name}')]
    busybox = find_busybox()
    if busybox is None:
        missing.append('a static busybox (busybox-static)')
    if missing:
        pytest.skip(f'no Docker engine for the docker tests: {", ".join(missing)} not installed '
                    '(.ci/install-system-deps installs them)')
    if os.geteuid() != 0:
        pytest.skip('no Docker engine for the docker tests: they run podman as root (its bridge '
                    'network needs it)')
    try:
        import docker  # noqa: F401
    except ImportError:
        pytest.skip('the docker SDK is not installed (pip install docker)')
    folder = Path(tempfile.mkdtemp(prefix='occo-podman-'))
    peer = PodmanPeer(folder, busybox)
    try:
        peer.start()
    except PeerUnavailable as exc:
        peer.stop()
        pytest.skip(f'no Docker engine for the docker tests: {exc}')
    except BaseException:
        peer.stop()
        raise
    try:
        yield peer
    finally:
        peer.stop()


@pytest.fixture
def local_image(docker_peer: PodmanPeer) -> PodmanPeer:
    """The peer with the test image present (a tutorial test removes it to import it again)."""
    if docker_peer.podman('image', 'exists', f'{IMAGE}:latest').returncode != 0:
        imported = docker_peer.podman('import', str(docker_peer.folder / 'image.tar'), f'{IMAGE}:latest')
        assert imported.returncode == 0, imported.stderr
    return docker_peer
