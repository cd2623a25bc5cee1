"""python -m occo.localredis: its server is stopped on every path, and servers started for
tests die with the process that started them (issue 8, point 10)."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import List, Optional

import pytest

from conftest import ROOT, live_processes

from occo.localredis import USAGE, RedisServer, _answers_ping

HELPER = [sys.executable, '-m', 'occo.localredis']
PORT_LINE = re.compile(r'^occo\.localredis: private redis-server at redis://127\.0\.0\.1:(\d+)/0$')


def helper_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith('OCCOPUS_')}
    env['PYTHONPATH'] = str(ROOT)
    return env


def servers_on(port: int) -> List[int]:
    """Live (non-zombie) redis-server processes serving ``port`` (redis-server names itself
    ``redis-server 127.0.0.1:<port>``)."""
    found = []
    for pid, read in live_processes():
        cmdline = read('cmdline').replace(b'\0', b' ').decode(errors='replace')
        if 'redis-server' in cmdline and (f':{port}' in cmdline or f'--port {port} ' in cmdline):
            found.append(pid)
    return found


def wait_gone(port: int, bound: float = 30.0) -> None:
    """Wait (a bound against hangs, not a timing check) until no server serves ``port``."""
    deadline = time.monotonic() + bound
    while servers_on(port) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert servers_on(port) == []
    assert not _answers_ping(port)


def started_port(process: subprocess.Popen) -> int:
    line = process.stderr.readline().rstrip('\n')
    match = PORT_LINE.match(line)
    assert match, line
    port = int(match.group(1))
    assert servers_on(port) and _answers_ping(port)
    return port


def run_helper(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(HELPER + list(args), capture_output=True, text=True, env=helper_env(),
                          timeout=60)


def port_of(stderr: str) -> Optional[int]:
    match = PORT_LINE.match(stderr.splitlines()[0]) if stderr else None
    return int(match.group(1)) if match else None


# -- every path stops the server ----------------------------------------------------------------

def test_command_not_found_stops_the_server():
    result = run_helper('--', 'no-such-command-occo')
    assert result.returncode == 127
    lines = result.stderr.splitlines()
    assert lines[1:] == ['occo.localredis: error: command not found: no-such-command-occo']
    assert 'Traceback' not in result.stderr
    wait_gone(port_of(result.stderr))


def test_command_that_cannot_be_run(tmp_path):
    script = tmp_path / 'not-executable'
    script.write_text('#!/bin/sh\nexit 0\n')
    script.chmod(0o600)
    result = run_helper('--', str(script))
    assert result.returncode == 126
    assert result.stderr.splitlines()[1:] == [
        f'occo.localredis: error: cannot run {script}: Permission denied']
    wait_gone(port_of(result.stderr))


def test_help_prints_usage_and_exits_0():
    for option in ('--help', '-h'):
        result = run_helper(option)
        assert result.returncode == 0
        assert result.stdout.splitlines()[0] == USAGE
        assert result.stderr == ''  # no server was started


def test_unknown_option_and_no_command():
    result = run_helper('--bogus')
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        USAGE, 'occo.localredis: error: unknown option --bogus (put -- before a command that starts with -)']
    result = run_helper()
    assert (result.returncode, result.stderr) == (2, USAGE + '\n')


def test_non_zero_exit_is_passed_on_and_stops_the_server():
    result = run_helper('--', 'sh', '-c', 'redis-cli -u "$OCCOPUS_REDIS_URL" ping >/dev/null 2>&1; exit 3')
    assert result.returncode == 3
    wait_gone(port_of(result.stderr))


@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGTERM])
def test_signal_is_passed_on_and_stops_the_server(sig):
    helper = subprocess.Popen(HELPER + ['--', 'sleep', '600'], stderr=subprocess.PIPE, text=True,
                              env=helper_env())
    try:
        port = started_port(helper)
        helper.send_signal(sig)
        assert helper.wait(timeout=60) == 128 + sig
        wait_gone(port)
        assert 'Traceback' not in helper.stderr.read()
    finally:
        if helper.poll() is None:
            helper.kill()
            helper.wait()


def test_killed_helper_leaves_no_server():
    helper = subprocess.Popen(HELPER + ['--', 'sleep', '600'], stderr=subprocess.PIPE, text=True,
                              env=helper_env(), start_new_session=True)
    try:
        port = started_port(helper)
        helper.kill()  # SIGKILL: no cleanup of our own runs
        helper.wait()
        wait_gone(port)
    finally:
        os.killpg(helper.pid, signal.SIGKILL)  # the sleep, which is not ours to keep


def test_killed_test_run_leaves_no_server(tmp_path):
    """A pytest run killed with SIGKILL while its session's redis-server runs (the fixture of
    tests/conftest.py): the server dies with it, and its work folder goes with the next start."""
    (tmp_path / 'test_hang.py').write_text(textwrap.dedent(f'''
        import os, time
        from conftest import redis_url  # the fixture of the suite
        def test_hang(redis_url):
            with open({str(tmp_path / 'url')!r} + '.new', 'w') as stream:
                stream.write(redis_url)
            os.rename({str(tmp_path / 'url')!r} + '.new', {str(tmp_path / 'url')!r})
            time.sleep(600)
    '''))
    env = dict(helper_env(), PYTHONPATH=f"{ROOT / 'tests'}{os.pathsep}{ROOT}")
    run = subprocess.Popen([sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider',
                            '-p', 'no:xdist', str(tmp_path / 'test_hang.py')],
                           cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / 'url').exists():
            assert run.poll() is None and time.monotonic() < deadline, 'the test run did not start'
            time.sleep(0.05)
        port = int(re.search(r':(\d+)/', (tmp_path / 'url').read_text()).group(1))
        assert servers_on(port)
        workdirs = [p for p in Path(tempfile.gettempdir()).glob(f'occo-redis-{run.pid}-*')]
        assert len(workdirs) == 1
        run.kill()
        run.wait()
        wait_gone(port)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    with RedisServer() as server:  # the next server removes what the killed run left
        assert not workdirs[0].exists()
        assert server.workdir.startswith(os.path.join(tempfile.gettempdir(), f'occo-redis-{os.getpid()}-'))


def test_server_started_by_another_thread_is_not_tied_to_it():
    """Linux ties PR_SET_PDEATHSIG to the starting thread: a server started by a thread that
    ends (tests/test_outages.py restarts one from a timer) must keep running."""
    import threading
    server = RedisServer()
    thread = threading.Thread(target=server.start)
    thread.start()
    thread.join()
    try:
        assert _answers_ping(server.port)
        assert server.process.poll() is None
    finally:
        server.stop()
    assert server.process is None
