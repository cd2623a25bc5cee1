"""Health checks against real services run by local-backend instances: an HTTP server, and a
private MariaDB for the mysqldbs check (its socket lives in /tmp: a Unix socket path must be
short)."""
from __future__ import annotations

import re
import importlib.util
import shutil

import pytest

from conftest import processes_of, write

HEALTH_ON = {'OCCOPUS_HEALTH_CHECKS': '1'}
MARIADB = shutil.which('mariadbd') or shutil.which('mariadbd', path='/usr/sbin:/usr/local/sbin')
HAVE_PYMYSQL = importlib.util.find_spec('pymysql') is not None
needs_mariadb = pytest.mark.skipif(
    not (MARIADB and shutil.which('mariadb-install-db') and shutil.which('mariadb') and HAVE_PYMYSQL),
    reason='the mysqldbs check needs the MariaDB server binaries (.ci/install-system-deps installs '
           'mariadb-server) and PyMySQL (pip install PyMySQL, in requirements)')

DATABASE = f"""\
'node_def:db':
  - resource: {{type: local}}
    contextualisation:
      type: cloudinit
      context_template:
        runcmd:
          - mariadb-install-db --no-defaults --datadir="$OCCOPUS_NODE_ROOT/data" --user="$(id -un)" --auth-root-authentication-method=normal --skip-test-db > install.log 2>&1
          - {MARIADB} --no-defaults --datadir="$OCCOPUS_NODE_ROOT/data" --user="$(id -un)" --port=3306 --bind-address="$OCCOPUS_NODE_IP" --socket="/tmp/occo-db-$OCCOPUS_NODE_IP.sock" --pid-file="$OCCOPUS_NODE_ROOT/pid" --skip-log-bin > server.log 2>&1 &
          - for i in $(seq 100); do [ -S "/tmp/occo-db-$OCCOPUS_NODE_IP.sock" ] && break; sleep 0.1; done
          - mariadb --no-defaults -S "/tmp/occo-db-$OCCOPUS_NODE_IP.sock" -u root -e "CREATE DATABASE {{{{ variables.dbname }}}}; CREATE USER 'wp'@'%' IDENTIFIED BY '{{{{ variables.dbpass }}}}'; GRANT ALL ON {{{{ variables.dbname }}}}.* TO 'wp'@'%';"
    health_check:
      ping: false
      mysqldbs:
        - {{name: '{{{{ variables.dbname }}}}', user: wp, pass: '{{{{ variables.checkpass }}}}'}}
      timeout: TIMEOUT
"""


def database_infra(tmp_path, checkpass, timeout):
    write(tmp_path, {'nodes.yaml': DATABASE.replace('TIMEOUT', str(timeout)),
                     'infra.yaml': 'infra_name: db\nuser_id: u\nnodes: [{name: db, type: db}]\n'
                                   f'variables: {{dbname: wordpress, dbpass: s3cret, checkpass: {checkpass}}}\n'})
    return tmp_path


@needs_mariadb
def test_mysqldbs_check_passes_against_a_real_database(occo, tmp_path):
    folder = database_infra(tmp_path, 's3cret', 60)
    assert occo.run('occopus-import', folder / 'nodes.yaml').returncode == 0
    result = occo.run('occopus-build', '-i', 'mysql', folder / 'infra.yaml', env=HEALTH_ON, timeout=180)
    assert result.returncode == 0, result.stderr
    assert processes_of('OCCOPUS_INFRA_ID=mysql')  # the database server runs
    report = occo.run('occopus-manage', '-i', 'mysql', '-r', env=HEALTH_ON)
    assert re.search(r'\(ready\):', report.stdout)
    assert occo.run('occopus-destroy', '-i', 'mysql').returncode == 0
    assert processes_of('OCCOPUS_INFRA_ID=mysql') == []


@needs_mariadb
def test_mysqldbs_check_fails_with_a_wrong_password_without_showing_it(occo, tmp_path):
    folder = database_infra(tmp_path, 'wrong-pass', 2)
    assert occo.run('occopus-import', folder / 'nodes.yaml').returncode == 0
    result = occo.run('occopus-build', '-i', 'mysql-bad', folder / 'infra.yaml', env=HEALTH_ON, timeout=180)
    assert result.returncode == 1
    assert re.search(r"health check failing for \d+ s: database 'wordpress' on 127[\d.]+ refuses a "
                     r'connection \(MySQL error 1045\)', result.stderr), result.stderr
    assert 'wrong-pass' not in result.stderr and 's3cret' not in result.stderr
    assert processes_of('OCCOPUS_INFRA_ID=mysql-bad') == []


WEB = """\
'node_def:web':
  - resource: {type: local}
    contextualisation:
      type: cloudinit
      context_template:
        write_files: [{path: /srv/index.html, content: hello}]
        runcmd:
          - python3 -m http.server 8080 --bind "$OCCOPUS_NODE_IP" --directory srv > http.log 2>&1 &
    health_check:
      ping: false
      urls: ['URL']
      timeout: 2
"""


@pytest.mark.parametrize('url, outcome', [
    ('http://{{ ip }}:8080/index.html', None),
    ('http://{{ ip }}:8080/missing.html', r'http://127[\d.]+:8080/missing.html answers HTTP 404'),
    ('http://admin:{{ variables.secret }}@{{ ip }}:8081/', r'http://admin:\*\*\*@127[\d.]+:8081/ does '
                                                           r'not answer \(ConnectionError\)'),
])
def test_url_checks(occo, tmp_path, url, outcome):
    write(tmp_path, {'nodes.yaml': WEB.replace('URL', url),
                     'infra.yaml': 'infra_name: w\nuser_id: u\nvariables: {secret: hunter2}\n'
                                   'nodes: [{name: web, type: web}]\n'})
    assert occo.run('occopus-import', tmp_path / 'nodes.yaml').returncode == 0
    result = occo.run('occopus-build', '-i', 'urls', tmp_path / 'infra.yaml', env=HEALTH_ON)
    if outcome is None:
        assert result.returncode == 0, result.stderr
        assert occo.run('occopus-destroy', '-i', 'urls').returncode == 0
    else:
        assert result.returncode == 1
        assert re.search(outcome, result.stderr), result.stderr
        assert 'hunter2' not in result.stderr
    events = occo.redis.xrange(f'{occo.prefix}{{urls}}:events')
    assert not any('hunter2' in str(fields) for _, fields in events)
