"""Malformed input: every mistake is reported in one line, with no traceback, and changes nothing.

Each case writes a few small files, runs the real command (``occopus-import FILE`` or
``occopus-build --dry-run FILE``) as a subprocess and checks that

1. it exits with 1;
2. stderr is exactly one line, ``<command>: error: ...``, naming the problem (and, where the
   problem has a place, ``<file>:<line>:``);
3. no ``Traceback`` appears anywhere;
4. nothing is printed on stdout;
5. Redis is byte-for-byte unchanged (node definitions are imported *before* the snapshot, so
   the comparison is meaningful).

Cases are built from the valid fixtures below with one small edit each; ``test_valid_fixture``
checks that the unedited fixtures are accepted, so each failure is caused by the edit alone.
Every path in a file's text or in the arguments may use ``@DIR@`` for the case's input folder.
"""
from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple, Union

import pytest

from conftest import Occo, write

IMPORT = 'occopus-import'
BUILD = 'occopus-build'
NODES = 'nodes.yaml'
INFRA = 'infra.yaml'
DIR = '@DIR@'
MARKER = 'pwned'          # the file an executed payload would create in the input folder
TOUCH = f'["touch {DIR}/{MARKER}"]'


# -- editing helpers ---------------------------------------------------------------------------

def edit(text: str, old: str, new: str) -> str:
    """``text`` with the single occurrence of ``old`` replaced by ``new``."""
    assert text.count(old) == 1, f'fixture edit: {old!r} occurs {text.count(old)} times'
    return text.replace(old, new)


def drop(text: str, *snippets: str) -> str:
    """``text`` without the (single) line containing each snippet."""
    lines = text.splitlines(keepends=True)
    for snippet in snippets:
        hits = [line for line in lines if snippet in line]
        assert len(hits) == 1, f'fixture drop: {snippet!r} is on {len(hits)} lines'
        lines.remove(hits[0])
    return ''.join(lines)


def after(text: str, anchor: str, added: str) -> str:
    """``text`` with ``added`` inserted right after the (single) line containing ``anchor``."""
    lines = text.splitlines(keepends=True)
    hits = [i for i, line in enumerate(lines) if anchor in line]
    assert len(hits) == 1, f'fixture insert: {anchor!r} is on {len(hits)} lines'
    return ''.join(lines[:hits[0] + 1]) + added + ''.join(lines[hits[0] + 1:])


def single(resource: str, *sections: str, name: str = 'thing') -> str:
    """A file with one node definition ``name`` of one implementation: its resource section,
    then any other sections (each given as unindented YAML)."""
    body = textwrap.indent(resource, ' ' * 6)
    rest = ''.join(textwrap.indent(section, ' ' * 4) for section in sections)
    return f"'node_def:{name}':\n  - resource:\n{body}{rest}"


# -- valid fixtures ----------------------------------------------------------------------------

VALID_NODEDEFS = """\
'node_def:web':
  - resource:
      type: ec2
      endpoint: https://ec2.eu-west-1.amazonaws.com
      regionname: eu-west-1
      image_id: ami-12345678
      instance_type: m1.small
      tags:
        owner: tester
    contextualisation:
      type: cloudinit
      context_template: |
        #cloud-config
        runcmd:
          - echo "{{ variables.greeting }}"
    health_check:
      ping: false
      ports: [22, 80]
      urls: ['http://{{ ip }}/']
      timeout: 600
'node_def:db':
  - resource:
      type: dummy
      boot_time: 0
    health_check:
      mysqldbs:
        - {name: wordpress, user: wp, pass: secret}
"""

# Imported (with VALID_NODEDEFS) before every dry-run case: templates that ask for addresses.
TEMPLATE_NODEDEFS = """\
'node_def:pinger':
  - resource: {type: dummy}
    contextualisation:
      type: cloudinit
      context_template: "ping -c 1 {{ getip('server') }}"
'node_def:lost':
  - resource: {type: dummy}
    contextualisation:
      type: cloudinit
      context_template: "ping -c 1 {{ getip('nope') }}"
"""

CLOUDINIT = """\
contextualisation:
  type: cloudinit
  context_template: |
    #cloud-config
    runcmd: [date]
"""

DOCKER_CONTEXT = """\
contextualisation:
  type: docker
  env: ['MESSAGE=hello']
  command: ['sh', '-c', 'echo $MESSAGE']
"""

NOVA = single("""\
type: nova
endpoint: https://keystone.example.org:5000/v3
project_id: a1b2c3d4
image_id: 0c0c0c0c-0000-image
flavor_name: m1.small
volume_size: 10
""", CLOUDINIT)

DOCKER = single("""\
type: docker
endpoint: unix://var/run/docker.sock
image: busybox
tag: latest
origin: dockerhub
""", DOCKER_CONTEXT)

AZURE_VM = single("""\
type: azure_vm
endpoint: https://management.azure.com
resource_group: occopus-rg
location: francecentral
vm_size: Standard_DS1_v2
publisher: Canonical
offer: UbuntuServer
sku: 18.04.0-LTS
version: latest
username: occopus
password: Secret-Passw0rd
""", CLOUDINIT)

AZURE_ACI = single("""\
type: azure_aci
endpoint: https://management.azure.com
resource_group: occopus-rg
location: francecentral
image: nginx:alpine
network_type: Public
memory: 1
cpu_cores: 1
os_type: linux
""", DOCKER_CONTEXT)

CLOUDBROKER = single("""\
type: cloudbroker
endpoint: https://cola-prototype.cloudbroker.com/
description:
  deployment_id: dep-1234
  instance_type_id: itype-5678
""", CLOUDINIT)

CLOUDSIGMA = single("""\
type: cloudsigma
endpoint: https://zrh.cloudsigma.com/api/2.0
libdrive_id: 0d0d0d0d-drive
description:
  cpu: 2000
  mem: 1073741824
  vnc_password: secret
""", CLOUDINIT)

DUMMY = single("""\
type: dummy
fail_rate: 0.5
""")

LOCAL = single("""\
type: local
address: 127.0.0.2
""", CLOUDINIT)

CHEF = single("""\
type: ec2
endpoint: https://ec2.eu-west-1.amazonaws.com
regionname: eu-west-1
image_id: ami-12345678
instance_type: m1.small
""", CLOUDINIT, """\
config_management:
  type: chef
  endpoint: https://chef.example.org
  run_list: ['recipe[apache2]']
""")

PUPPET = edit(CHEF, """\
      type: chef
      endpoint: https://chef.example.org
      run_list: ['recipe[apache2]']
""", """\
      type: puppet_solo
      manifests: ['https://example.org/site.pp']
      modules: [puppetlabs-apache]
""")

VALID_INFRA = """\
infra_name: demo-infra
user_id: somebody@example.com
nodes:
  - &W
    name: web
    type: web
    scaling:
      min: 1
      max: 2
    filter:
      type: ec2
    variables:
      greeting: hi
  - &D
    name: db
    type: db
dependencies:
  - connection: [*W, *D]
variables:
  greeting: hello
"""

CYCLE3_INFRA = """\
infra_name: cyclic
user_id: somebody@example.com
nodes:
  - &A
    name: alpha
    type: db
  - &B
    name: beta
    type: db
  - &C
    name: gamma
    type: db
  - &E
    name: epsilon
    type: db
dependencies:
  - [*E, *A]
  - [*A, *B]
  - [*B, *C]
  - [*C, *A]
"""

# pinger-node's template calls getip('server') (an inferred dependency on server) ...
INFERRED_INFRA = """\
infra_name: inferred
user_id: somebody@example.com
nodes:
  - &P
    name: pinger-node
    type: pinger
  - &S
    name: server
    type: db
"""

VALID_FIXTURES = {
    'nodedefs': (IMPORT, VALID_NODEDEFS), 'template-nodedefs': (IMPORT, TEMPLATE_NODEDEFS),
    'nova': (IMPORT, NOVA), 'docker': (IMPORT, DOCKER), 'azure_vm': (IMPORT, AZURE_VM),
    'azure_aci': (IMPORT, AZURE_ACI), 'cloudbroker': (IMPORT, CLOUDBROKER),
    'cloudsigma': (IMPORT, CLOUDSIGMA), 'dummy': (IMPORT, DUMMY), 'local': (IMPORT, LOCAL),
    'chef': (IMPORT, CHEF), 'puppet': (IMPORT, PUPPET),
    'infra': (BUILD, VALID_INFRA), 'infra-inferred': (BUILD, INFERRED_INFRA),
    'infra-cycle3-without-back-edge': (BUILD, drop(CYCLE3_INFRA, '[*C, *A]')),
}


# -- the table ---------------------------------------------------------------------------------

Where = Tuple[str, Union[str, int, None]]


@dataclass(frozen=True)
class Case:
    command: str
    files: Dict[str, Optional[str]]          # name -> text (None: make a directory)
    args: Tuple[str, ...]
    expect: Tuple[str, ...]                   # fragments of the message (paths shown as @DIR@)
    at: Optional[Where] = None                # (file, text on the offending line | line | None)
    preimport: bool = False                   # import VALID_NODEDEFS at the same path first
    marker: bool = False                      # a payload would create @DIR@/pwned


def case(id: str, command: str, files: Dict[str, Optional[str]], args: Sequence[str],
         expect: Union[str, Sequence[str]], *, at: Optional[Where] = None, preimport: bool = False,
         marker: bool = False, xfail: Optional[str] = None) -> object:
    expect = (expect,) if isinstance(expect, str) else tuple(expect)
    marks = [pytest.mark.xfail(strict=True, reason=xfail)] if xfail else []
    return pytest.param(Case(command, files, tuple(args), expect, at, preimport, marker),
                        id=id, marks=marks)


def imp(id: str, text: str, expect: Union[str, Sequence[str]], *,
        extra: Optional[Dict[str, Optional[str]]] = None, **kw: object) -> object:
    """``occopus-import nodes.yaml`` where nodes.yaml is ``text`` (plus ``extra`` files)."""
    return case(f'import-{id}', IMPORT, {NODES: text, **(extra or {})}, [NODES], expect, **kw)


def dry(id: str, text: str, expect: Union[str, Sequence[str]], *,
        extra: Optional[Dict[str, Optional[str]]] = None, **kw: object) -> object:
    """``occopus-build --dry-run infra.yaml`` where infra.yaml is ``text``."""
    return case(f'build-{id}', BUILD, {INFRA: text, **(extra or {})}, ['--dry-run', INFRA],
                expect, **kw)


def web(old: str, new: str) -> str:
    """VALID_NODEDEFS with one edit."""
    return edit(VALID_NODEDEFS, old, new)


def infra(old: str, new: str) -> str:
    """VALID_INFRA with one edit."""
    return edit(VALID_INFRA, old, new)


SECTION = "in '{}' section of node '{}'[0]"

CASES = [
    # ---- YAML syntax --------------------------------------------------------------------------
    imp('yaml-bad-indentation', web('      regionname:', '     regionname:'),
        'YAML syntax error', at=(NODES, 'regionname:')),
    imp('yaml-unclosed-quote', web('pass: secret}', 'pass: "secret}'),
        ['YAML syntax error', 'quoted scalar'], at=(NODES, '"secret}')),
    imp('yaml-tab-indentation', web('      image_id:', '\timage_id:'),
        ['YAML syntax error', "'\\t'"], at=(NODES, 'image_id:')),
    imp('yaml-duplicate-key', after(VALID_NODEDEFS, 'instance_type: m1.small',
                                    '      instance_type: m1.large\n'),
        ["duplicate key 'instance_type'", 'first given at line 7'],
        at=(NODES, 'm1.large'), preimport=True),
    imp('yaml-error-in-yaml-import',
        edit(CHEF, "context_template: |\n        #cloud-config\n        runcmd: [date]\n",
             'context_template: !yaml_import {url: file://cloud_init.yaml}\n'),
        'YAML syntax error', extra={'cloud_init.yaml': 'runcmd:\n  - date\n - uptime\n'},
        at=('cloud_init.yaml', ' - uptime')),
    dry('yaml-bad-indentation', infra('    type: db', '   type: db'),
        'YAML syntax error', at=(INFRA, '   type: db')),
    dry('yaml-unclosed-bracket', infra('connection: [*W, *D]', 'connection: [*W, *D'),
        ['YAML syntax error', 'flow sequence'], at=(INFRA, 'connection:')),
    dry('yaml-tab-indentation', infra('    name: db', '\tname: db'),
        ['YAML syntax error', "'\\t'"], at=(INFRA, 'name: db')),
    dry('yaml-duplicate-key', after(VALID_INFRA, 'name: web', '    name: www\n'),
        ["duplicate key 'name'", 'first given at line 5'], at=(INFRA, 'name: www')),
    dry('yaml-error-in-yaml-import',
        infra('variables:\n  greeting: hello\n', 'variables: !yaml_import {url: file://vars.yaml}\n'),
        'YAML syntax error', extra={'vars.yaml': 'greeting: hello\n  other: x\n'},
        at=('vars.yaml', 'other: x')),

    # ---- unknown keys -------------------------------------------------------------------------
    dry('unknown-top-level-key', after(VALID_INFRA, 'user_id:', 'infra_id: abc\n'),
        "unknown key 'infra_id' in infrastructure description", at=(INFRA, 'infra_id: abc')),
    dry('unknown-node-key', after(VALID_INFRA, 'name: db', '    count: 2\n'),
        "unknown key 'count' in node 'db'", at=(INFRA, 'count: 2')),
    dry('unknown-scaling-key', infra('      max: 2', '      max: 2\n      initial: 1'),
        "unknown key 'initial' in scaling of node 'web'", at=(INFRA, 'initial: 1')),
    imp('key-without-node_def-prefix', web("'node_def:db':", "'nodedef:db':"),
        ["in node 'nodedef:db'", "must begin with 'node_def:<nodename>'"], at=(NODES, "'nodedef:db':")),
    imp('unknown-section', after(VALID_NODEDEFS, 'echo "{{ variables.greeting }}"',
                                 '    variables: {a: 1}\n'),
        ["in node 'web'", "Invalid section 'variables'"], at=(NODES, 'variables: {a: 1}'),
        preimport=True),
    imp('ec2-unknown-key', after(VALID_NODEDEFS, 'instance_type: m1.small', '      flavor_name: big\n'),
        [SECTION.format('resource', 'web'), 'Unknown key(s): flavor_name'],
        at=(NODES, 'flavor_name: big'), preimport=True),
    imp('nova-unknown-key', after(NOVA, 'flavor_name:', '      instance_type: m1.small\n'),
        [SECTION.format('resource', 'thing'), 'Unknown key(s): instance_type'],
        at=(NODES, 'instance_type:')),
    imp('docker-unknown-key', after(DOCKER, 'image: busybox', '      networkmode: host\n'),
        [SECTION.format('resource', 'thing'), 'Unknown key(s): networkmode'],
        at=(NODES, 'networkmode:')),
    imp('dummy-unknown-key', after(DUMMY, 'fail_rate:', '      flavour: vanilla\n'),
        [SECTION.format('resource', 'thing'), 'Unknown key(s): flavour'], at=(NODES, 'flavour:')),
    imp('local-unknown-key', after(LOCAL, 'address:', '      port: 8080\n'),
        [SECTION.format('resource', 'thing'), 'Unknown key(s): port'], at=(NODES, 'port: 8080')),
    imp('cloudinit-unknown-key', after(NOVA, 'type: cloudinit', '      user_data: x\n'),
        [SECTION.format('contextualisation', 'thing'), 'Unknown key(s): user_data'],
        at=(NODES, 'user_data:')),
    imp('docker-context-unknown-key', after(DOCKER, "env: ['MESSAGE", '      volumes: [/data]\n'),
        [SECTION.format('contextualisation', 'thing'), 'Unknown key(s): volumes'],
        at=(NODES, 'volumes:')),
    imp('chef-unknown-key', after(CHEF, 'run_list:', '      client_name: me\n'),
        [SECTION.format('config_management', 'thing'), 'Unknown key(s): client_name'],
        at=(NODES, 'client_name:')),
    imp('puppet-unknown-key', after(PUPPET, 'modules:', '      hiera: {a: 1}\n'),
        [SECTION.format('config_management', 'thing'), 'Unknown key(s): hiera'],
        at=(NODES, 'hiera:')),
    imp('health-check-unknown-key', after(VALID_NODEDEFS, 'timeout: 600', '      retries: 3\n'),
        [SECTION.format('health_check', 'web'), 'Unknown key(s): retries'], at=(NODES, 'retries:')),
    imp('mysqldbs-unknown-key', web('pass: secret}', 'pass: secret, host: db1}'),
        [SECTION.format('health_check', 'db'), 'Unknown key(s) in mysqldbs: host'],
        at=(NODES, 'host: db1')),

    # ---- missing required keys ----------------------------------------------------------------
    imp('ec2-missing-endpoint', drop(VALID_NODEDEFS, 'endpoint:'),
        [SECTION.format('resource', 'web'), 'Missing key(s): endpoint'],
        at=(NODES, 'type: ec2'), preimport=True),
    imp('nova-missing-keys', drop(NOVA, 'project_id', 'flavor_name'),
        [SECTION.format('resource', 'thing'), 'Missing key(s): project_id, flavor_name'],
        at=(NODES, 'type: nova')),
    imp('azure_vm-missing-vm_size', drop(AZURE_VM, 'vm_size'),
        'Missing key(s): vm_size', at=(NODES, 'type: azure_vm')),
    imp('azure_vm-no-password-nor-ssh_key_data', drop(AZURE_VM, 'password:'),
        'Missing key(s): either "password" or "ssh_key_data" must be defined',
        at=(NODES, 'type: azure_vm')),
    imp('azure_aci-missing-keys', drop(AZURE_ACI, 'network_type', 'os_type'),
        'Missing key(s): network_type, os_type', at=(NODES, 'type: azure_aci')),
    imp('cloudbroker-missing-description',
        drop(CLOUDBROKER, 'description:', 'deployment_id', 'instance_type_id'),
        'Missing key(s): description', at=(NODES, 'type: cloudbroker')),
    imp('cloudbroker-description-missing-deployment_id', drop(CLOUDBROKER, 'deployment_id'),
        'Missing key(s) in description: deployment_id', at=(NODES, 'description:')),
    imp('cloudsigma-description-missing-keys', drop(CLOUDSIGMA, 'cpu:', 'vnc_password'),
        'Missing key(s) in description: cpu, vnc_password', at=(NODES, 'description:')),
    imp('docker-missing-image', drop(DOCKER, 'image: busybox'),
        'Missing key(s): image', at=(NODES, 'type: docker\n      endpoint:')),
    imp('resource-missing-type', drop(VALID_NODEDEFS, 'type: ec2'),
        [SECTION.format('resource', 'web'), "Missing key 'type'"], at=(NODES, 'endpoint:')),
    imp('contextualisation-missing-type', drop(VALID_NODEDEFS, 'type: cloudinit'),
        [SECTION.format('contextualisation', 'web'), "Missing key 'type'!"],
        at=(NODES, 'context_template:')),
    imp('config_management-missing-type', drop(CHEF, 'type: chef'),
        [SECTION.format('config_management', 'thing'), "Missing key 'type'!"],
        at=(NODES, 'endpoint: https://chef')),
    imp('missing-resource-section',
        "'node_def:thing':\n  - contextualisation: {type: cloudinit, context_template: x}\n"
        '    health_check: {ping: false}\n',
        ["in node 'thing'[0]: Missing 'resource' section!"],
        at=(NODES, 'contextualisation:')),
    imp('cloudinit-missing-context_template', drop(NOVA, 'context_template', '#cloud-config', 'runcmd'),
        [SECTION.format('contextualisation', 'thing'), 'Missing key(s): context_template'],
        at=(NODES, 'type: cloudinit')),
    dry('missing-infra_name', drop(VALID_INFRA, 'infra_name'),
        'infra_name must be defined'),
    dry('missing-nodes', 'infra_name: empty\nuser_id: u\n', 'nodes section must be defined'),
    dry('node-missing-name', drop(VALID_INFRA, 'name: db'),
        'missing key "name" in node 2', at=(INFRA, '- &D')),
    dry('node-missing-type', drop(VALID_INFRA, 'type: db'),
        ['missing key "type" in node \'db\''], at=(INFRA, '- &D')),

    # ---- cycles, duplicates, dangling and self dependencies -----------------------------------
    dry('two-node-cycle', after(VALID_INFRA, 'connection: [*W, *D]', '  - [*D, *W]\n'),
        ['Cycle detected', 'web -> db -> web'], at=(INFRA, 'connection:')),
    dry('three-node-cycle', CYCLE3_INFRA,
        ['Cycle detected', 'alpha -> beta -> gamma -> alpha'], at=(INFRA, '[*A, *B]')),
    dry('cycle-from-inferred-dependency', INFERRED_INFRA + 'dependencies:\n  - [*S, *P]\n',
        ['Cycle detected', 'server', 'pinger-node'], at=(INFRA, '[*S, *P]')),
    dry('duplicate-node-name', infra('name: db', 'name: web'),
        "node name 'web' is used twice", at=(INFRA, '    name: web\n    type: db')),
    dry('dependency-on-undeclared-node', after(VALID_INFRA, 'connection: [*W, *D]', '  - [web, ghost]\n'),
        ["dependency 2 names node 'ghost'", 'not declared'], at=(INFRA, '[web, ghost]')),
    dry('node-depends-on-itself', infra('connection: [*W, *D]', 'connection: [*W, *W]'),
        "node 'web' cannot depend on itself", at=(INFRA, 'connection:')),

    # ---- unsafe and unknown tags --------------------------------------------------------------
    imp('python-object-apply', web('instance_type: m1.small',
                                   f'instance_type: !!python/object/apply:os.system {TOUCH}'),
        "unsupported YAML tag '!!python/object/apply:os.system'", at=(NODES, 'os.system'),
        marker=True, preimport=True),
    imp('python-name', web('instance_type: m1.small', 'instance_type: !!python/name:os.system ""'),
        "unsupported YAML tag '!!python/name:os.system'", at=(NODES, 'python/name'), marker=True),
    imp('python-object-new', web('instance_type: m1.small',
                                 'instance_type: !!python/object/new:subprocess.Popen '
                                 f'{{args: [{TOUCH}]}}'),
        "unsupported YAML tag '!!python/object/new:subprocess.Popen'", at=(NODES, 'Popen'),
        marker=True),
    imp('unknown-tag', web('instance_type: m1.small', 'instance_type: !foo m1.small'),
        "unsupported YAML tag '!foo'", at=(NODES, '!foo')),
    dry('python-object-apply', infra('greeting: hello', f'greeting: !!python/object/apply:os.system {TOUCH}'),
        "unsupported YAML tag '!!python/object/apply:os.system'", at=(INFRA, 'os.system'), marker=True),
    dry('python-name', infra('greeting: hello', 'greeting: !!python/name:os.system ""'),
        "unsupported YAML tag '!!python/name:os.system'", at=(INFRA, 'python/name'), marker=True),
    dry('python-object-new', infra('greeting: hello', 'greeting: !!python/object/new:subprocess.Popen '
                                   f'{{args: [{TOUCH}]}}'),
        "unsupported YAML tag '!!python/object/new:subprocess.Popen'", at=(INFRA, 'Popen'), marker=True),
    dry('unknown-tag', infra('greeting: hello', 'greeting: !foo hello'),
        "unsupported YAML tag '!foo'", at=(INFRA, '!foo')),

    # ---- imports ------------------------------------------------------------------------------
    imp('yaml_import-missing-file', edit(NOVA, "|\n        #cloud-config\n        runcmd: [date]\n",
                                         '!yaml_import {url: file://missing.yaml}\n'),
        [f"!yaml_import cannot read '{DIR}/missing.yaml'", 'No such file'], at=(NODES, 'missing.yaml')),
    imp('text_import-missing-file', edit(NOVA, "|\n        #cloud-config\n        runcmd: [date]\n",
                                         '!text_import {url: file://missing.sh}\n'),
        [f"!text_import cannot read '{DIR}/missing.sh'", 'No such file'], at=(NODES, 'missing.sh')),
    dry('yaml_import-missing-file',
        infra('greeting: hello', 'greeting: !yaml_import {url: file://nothere.yaml}'),
        [f"!yaml_import cannot read '{DIR}/nothere.yaml'", 'No such file'], at=(INFRA, 'nothere.yaml')),
    imp('yaml_import-http-url', edit(NOVA, "|\n        #cloud-config\n        runcmd: [date]\n",
                                     '!yaml_import {url: "http://example.org/ci.yaml"}\n'),
        ['!yaml_import supports only file:// URLs', "'http://example.org/ci.yaml'"],
        at=(NODES, 'http://example.org')),
    dry('text_import-http-url',
        infra('greeting: hello', 'greeting: !text_import {url: "http://example.org/x"}'),
        ['!text_import supports only file:// URLs', "'http://example.org/x'"], at=(INFRA, 'http://')),
    case('import-import-cycle', IMPORT,
         {'a.yaml': "'node_def:web':\n  - resource: !yaml_import {url: file://b.yaml}\n",
          'b.yaml': 'type: dummy\nname: !yaml_import {url: file://a.yaml}\n'},
         ['a.yaml'], [f'!yaml_import cycle: {DIR}/a.yaml -> {DIR}/b.yaml -> {DIR}/a.yaml'],
         at=('b.yaml', 'file://a.yaml')),

    # ---- wrong types and values ---------------------------------------------------------------
    dry('nodes-not-a-list', 'infra_name: x\nuser_id: u\nnodes:\n  name: web\n  type: web\n',
        'nodes must be a list', at=(INFRA, 'nodes:')),
    dry('scaling-min-text', infra('min: 1', 'min: one'),
        "scaling min of node 'web' must be a whole number", at=(INFRA, 'min: one')),
    dry('scaling-min-negative', infra('min: 1', 'min: -1'),
        ["scaling min of node 'web'", '-1'], at=(INFRA, 'min: -1')),
    dry('filter-not-a-mapping', infra('filter:\n      type: ec2', 'filter: ec2'),
        "unknown type of filter in node 'web' - has to be a dict!", at=(INFRA, 'filter: ec2')),
    dry('variables-not-a-mapping', infra('variables:\n  greeting: hello', 'variables: [greeting, hello]'),
        'variables must be a mapping', at=(INFRA, 'variables: [greeting')),
    dry('node-variables-not-a-mapping', infra('variables:\n      greeting: hi', 'variables: hi'),
        'variables must be a mapping', at=(INFRA, 'variables: hi')),
    imp('ports-not-a-list', web('ports: [22, 80]', 'ports: 80'),
        [SECTION.format('health_check', 'web'), "Invalid format of 'ports' section! Must be a list."],
        at=(NODES, 'ports: 80')),
    imp('port-not-an-integer', web('ports: [22, 80]', 'ports: [22, http]'),
        [SECTION.format('health_check', 'web'), "Invalid port 'http'"], at=(NODES, 'ports:')),
    imp('mysqldbs-not-a-list', web('      mysqldbs:\n        - {name: wordpress, user: wp, pass: secret}',
                                   '      mysqldbs: 3306'),
        [SECTION.format('health_check', 'db'), "Invalid format of 'mysqldbs' section! Must be a list."],
        at=(NODES, 'mysqldbs: 3306')),
    imp('ping-not-a-bool', web('ping: false', 'ping: maybe'),
        "Invalid value of 'ping' section! Must be True/False.", at=(NODES, 'ping: maybe')),
    imp('timeout-not-an-integer', web('timeout: 600', 'timeout: ten minutes'),
        "Invalid value of 'timeout' section!", at=(NODES, 'timeout: ten')),
    imp('urls-not-a-list', web("urls: ['http://{{ ip }}/']", "urls: 'http://{{ ip }}/'"),
        "Invalid format of 'urls' section! Must be a list.", at=(NODES, 'urls:')),
    imp('urls-a-number', web("urls: ['http://{{ ip }}/']", 'urls: 8080'),
        "Invalid format of 'urls' section! Must be a list.", at=(NODES, 'urls: 8080')),
    imp('nova-volume_size-negative', edit(NOVA, 'volume_size: 10', 'volume_size: -5'),
        'Negative numbers for volume_size are prohibited!', at=(NODES, 'volume_size')),
    imp('nova-volume_size-not-a-number', edit(NOVA, 'volume_size: 10', 'volume_size: big'),
        'Could not convert volume_size value "big" to integer!', at=(NODES, 'volume_size')),
    imp('node-definition-not-a-list', web("'node_def:db':\n  - resource:", "'node_def:db':\n    resource:"),
        ["in node 'db'", 'Node definition has to be a list of dictionaries!'], at=(NODES, "'node_def:db'")),
    imp('ec2-tags-wrong-type', web('tags:\n        owner: tester', 'tags: tester'),
        "'tags' must be a mapping", at=(NODES, 'tags: tester')),
    imp('dummy-fail_rate-above-1', edit(DUMMY, 'fail_rate: 0.5', 'fail_rate: 1.5'),
        "'fail_rate' must be a number between 0 and 1, got 1.5", at=(NODES, 'fail_rate')),
    imp('local-address-not-loopback', edit(LOCAL, '127.0.0.2', '10.0.0.2'),
        ["'address' must be a loopback address in 127.0.0.0/8", "'10.0.0.2'"], at=(NODES, 'address:')),
    imp('local-address-127.0.0.1', edit(LOCAL, '127.0.0.2', '127.0.0.1'),
        ['other than 127.0.0.1', "got '127.0.0.1'"], at=(NODES, 'address:')),
    imp('docker-with-cloudinit', edit(DOCKER, textwrap.indent(DOCKER_CONTEXT, '    '),
                                      textwrap.indent(CLOUDINIT, '    ')),
        "contextualisation type 'cloudinit' cannot be used with resource type 'docker'",
        at=(NODES, 'type: cloudinit')),
    imp('unknown-resource-type', web('type: ec2', 'type: gce'),
        [SECTION.format('resource', 'web'), "Unknown resource type 'gce'"], at=(NODES, 'type: gce')),
    imp('unknown-contextualisation-type', web('type: cloudinit', 'type: ignition'),
        "Unknown contextualisation type 'ignition'", at=(NODES, 'type: ignition')),
    imp('unknown-config-manager-type', edit(CHEF, 'type: chef', 'type: salt'),
        "Unknown config manager type 'salt'", at=(NODES, 'type: salt')),

    # ---- checks that need the imported node definitions (dry run) -----------------------------
    dry('type-not-imported', infra('type: db', 'type: nosuch'),
        ["node 'db': type 'nosuch' has no imported node definition", 'node_def:nosuch'],
        at=(INFRA, '- &D')),
    dry('filter-matches-nothing', infra('      type: ec2', '      type: nova'),
        ["node 'web'", 'No matching node definition'], at=(INFRA, '- &W')),
    dry('getip-of-missing-node', infra('type: db', 'type: lost'),
        ["node 'db'", "address of node 'nope'", 'no such node'], at=(INFRA, '- &D')),
    imp('jinja-syntax-error', web('echo "{{ variables.greeting }}"', 'echo "{{ variables.greeting "'),
        [SECTION.format('contextualisation', 'web'), 'template syntax error', 'context_template'],
        at=(NODES, 'context_template:')),

    # ---- whole-file problems ------------------------------------------------------------------
    imp('empty-file', '', 'the file is empty', at=(NODES, None)),
    dry('empty-file', '# nothing here\n', 'the file is empty', at=(INFRA, None)),
    imp('yaml-list', "- 'node_def:web'\n- resource: {type: dummy}\n",
        'expected node definitions', at=(NODES, "- 'node_def:web'")),
    dry('yaml-list', '- infra_name: x\n- nodes: []\n', 'expected an infrastructure description',
        at=(INFRA, '- infra_name: x')),
    case('import-missing-path', IMPORT, {}, ['no-such.yaml'], 'No such file or directory',
         at=('no-such.yaml', None)),
    case('build-missing-path', BUILD, {}, ['--dry-run', 'no-such.yaml'], 'No such file or directory',
         at=('no-such.yaml', None)),
    case('import-directory', IMPORT, {'defs': None}, ['defs'], 'is a directory', at=('defs', None)),
    case('build-directory', BUILD, {'infra.d': None}, ['--dry-run', 'infra.d'], 'is a directory',
         at=('infra.d', None)),

    # ---- all or nothing -----------------------------------------------------------------------
    imp('second-definition-broken-keeps-first',
        web('instance_type: m1.small', 'instance_type: m1.large') + "'node_def:extra':\n  - resource: {}\n",
        [SECTION.format('resource', 'extra'), "Missing key 'type'"], at=(NODES, 'resource: {}'),
        preimport=True),
    # ---- hostile documents --------------------------------------------------------------------
    dry('billion-laughs', infra('variables:\n  greeting: hello', 'variables:\n  greeting: hello\n'
        + ''.join(f"  l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9) if i else ', '.join(['lol'] * 9)}]\n"
                  for i in range(9))),
        'more than 200000 values once its aliases are expanded', at=(INFRA, None)),
    imp('recursive-alias', web('tags:\n        owner: tester', 'tags: &t\n        owner: [*t]'),
        'a YAML alias refers to a mapping or list that contains it', at=(NODES, 'tags: &t')),
    imp('template-error-in-text-import',
        edit(CHEF, "context_template: |\n        #cloud-config\n        runcmd: [date]\n",
             'context_template: !text_import {url: file://cloud_init.txt}\n'),
        ['template syntax error in context_template', "unexpected '}'"],
        extra={'cloud_init.txt': '#cloud-config\nruncmd:\n  - date\n  - echo {{ name }\n'},
        at=('cloud_init.txt', 'echo {{ name }')),
    dry('scaling-max-zero', infra('min: 1', 'min: 0').replace('max: 2', 'max: 0'),
        "scaling max of node 'web' must be a whole number >= 1, got 0", at=(INFRA, 'max: 0')),
    dry('scaling-over-limit', infra('min: 1', 'min: 100000000').replace('max: 2', 'max: 100000000'),
        ["scaling min of node 'web' is 100000000, more than the limit of 10000 instances per node",
         'raise limits.instances_per_node'], at=(INFRA, 'min: 100000000')),
    # ---- control characters and names ---------------------------------------------------------
    dry('nul-byte', infra('greeting: hi', 'greeting: h\x00i'),
        'the control character \\x00 at column 18 is not allowed in a YAML file', at=(INFRA, 'greeting: h\x00i')),
    imp('esc-byte', web('instance_type: m1.small', 'instance_type: m1.\x1bsmall'),
        'the control character \\x1b', at=(NODES, 'instance_type: m1.')),
    dry('escape-in-infra-name', infra('infra_name: demo-infra', 'infra_name: "demo\\e[2J"'),
        "infra_name 'demo\\x1b[2J' contains the control character \\x1b", at=(INFRA, 'infra_name')),
    dry('node-name-dash', infra('name: web', 'name: -rf'),
        "node '-rf' cannot start with '-'", at=(INFRA, 'name: -rf')),
]


# -- the test ----------------------------------------------------------------------------------

def _import_ok(occo: Occo, path: Path) -> None:
    result = occo.run(IMPORT, path)
    assert result.returncode == 0, result.stderr
    assert 'Successfully imported nodes' in result.stdout


def _expected_line(text: str, where: Union[str, int]) -> int:
    if isinstance(where, int):
        return where
    hits = [number for number, line in enumerate(text.splitlines(), 1) if where in line]
    if not hits:  # a multi-line snippet: the line it starts on
        position = text.index(where)
        hits = [text.count('\n', 0, position) + 1]
    assert len(hits) == 1, f'fixture: {where!r} is on lines {hits}'
    return hits[0]


def test_case_count() -> None:
    assert len(CASES) >= 45


@pytest.mark.parametrize('name', sorted(VALID_FIXTURES))
def test_valid_fixture(occo: Occo, tmp_path: Path, name: str) -> None:
    """The fixtures the malformed cases are edited from are themselves accepted."""
    command, text = VALID_FIXTURES[name]
    write(tmp_path, {'setup/nodes.yaml': VALID_NODEDEFS + TEMPLATE_NODEDEFS, 'file.yaml': text})
    if command == BUILD:
        _import_ok(occo, tmp_path / 'setup' / 'nodes.yaml')
        result = occo.run(BUILD, '--dry-run', tmp_path / 'file.yaml')
    else:
        result = occo.run(IMPORT, tmp_path / 'file.yaml')
    assert result.returncode == 0, result.stderr
    assert 'Traceback' not in result.stdout + result.stderr


@pytest.mark.parametrize('case', CASES)
def test_malformed(occo: Occo, tmp_path: Path, case: Case) -> None:
    folder = tmp_path / 'in'
    folder.mkdir()
    prefix = str(folder)

    def resolve(arg: str) -> str:
        return arg if arg.startswith('-') else str(folder / arg)

    if case.command == BUILD:  # the definitions the description would use are in Redis
        write(tmp_path, {'setup/nodes.yaml': VALID_NODEDEFS + TEMPLATE_NODEDEFS})
        _import_ok(occo, tmp_path / 'setup' / 'nodes.yaml')
    elif case.preimport:  # a previous, valid version of the same file was imported
        target = case.args[-1]
        write(folder, {target: VALID_NODEDEFS})
        _import_ok(occo, folder / target)
    texts = {name: text.replace(DIR, prefix) for name, text in case.files.items() if text is not None}
    write(folder, texts)
    for name, text in case.files.items():
        if text is None:
            (folder / name).mkdir()
    if case.command == BUILD or case.preimport:
        assert occo.keys(), 'the setup import stored nothing'

    before = occo.snapshot()
    result = occo.run(case.command, *(resolve(a) for a in case.args))
    after_run = occo.snapshot()

    report = f'exit {result.returncode}\nstdout: {result.stdout!r}\nstderr: {result.stderr!r}'
    assert 'Traceback' not in result.stdout + result.stderr, report
    assert result.returncode == 1, report
    assert result.stdout == '', report
    stderr = result.stderr.rstrip('\n')
    assert stderr and '\n' not in stderr, report
    assert stderr.startswith(f'{case.command}: error: '), report
    message = stderr.replace(prefix, DIR)  # fragments must not match the test's own folder name
    for fragment in case.expect:
        assert fragment in message, f'{fragment!r} missing\n{report}'
    if case.at is not None:
        name, where = case.at
        if where is None:
            assert f'{DIR}/{name}: ' in message, f'location {name} missing\n{report}'
        else:
            line = _expected_line(texts[name], where)
            assert f'{DIR}/{name}:{line}: ' in message, f'location {name}:{line} missing\n{report}'
    assert after_run == before, 'Redis changed'
    if case.preimport:  # the definitions imported before are still the ones stored
        stored = [occo.redis.hget(key, 'web') or '' for key in occo.keys()]
        assert any('"instance_type":"m1.small"' in text for text in stored), stored
    if case.marker:
        assert not (folder / MARKER).exists(), 'the YAML payload was executed'
