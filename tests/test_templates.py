"""Templates: the helpers, lenient undefined names, the sandbox, cmd() and rendering with
`occopus-build --dry-run --render`."""
from __future__ import annotations

import json

import pytest
import yaml

from conftest import write
from occo import templates
from occo.compiler import compile_infra
from occo.descriptions.infra import parse_infra_description_text
from occo.descriptions.loader import load_yaml_text
from occo.descriptions.nodedefs import parse_node_definitions
from occo.errors import TemplateError
from occo.resolution import Address, AddressBook, Resolver, make_cmd

DEFS = """\
'node_def:server':
  - resource: {type: dummy, name: 'srv-{{ cut(infra_id, 0, 4) }}'}
'node_def:client':
  - resource: {type: dummy}
    contextualisation:
      type: cloudinit
      context_template:
        write_files:
          - path: /etc/peers
            content: "{{ getip('server') }} {{ getprivip('server') }} {{ getipall('server') }}\\n"
        runcmd:
          - "echo {{ name }} {{ infra_name }} {{ variables.greeting }} {{ nothing_here }}."
'node_def:text':
  - resource: {type: dummy}
    contextualisation:
      type: cloudinit
      context_template: "#cloud-config\\nruncmd:\\n- echo {{ node_id }}\\n"
'node_def:container':
  - resource: {type: dummy}
    contextualisation:
      type: docker
      env: ["TARGET={{ getip('server') }}", "PORT={{ port }}"]
      command: [sh, -c, "echo {{ greeting | upper }} | b64={{ 'x' | b64encode }}"]
      context_variables: "port: 8080\\ngreeting: {{ variables.greeting }}"
'node_def:puppet':
  - resource: {type: dummy}
    contextualisation:
      type: cloudinit
      context_template: "#cloud-config\\nruncmd: ['{{ puppet.modules }}', \\"{{ puppet.attributes }}\\"]"
    config_management:
      type: puppet_solo
      manifests: [http://example.org/a.pp]
      modules: [m1, m2]
      attributes: [{user: '{{ variables.greeting }}'}]
"""

INFRA = """\
infra_name: tmpl-infra
user_id: u
variables: {greeting: hello}
nodes:
  - {name: server, type: server, scaling: {min: 2}}
  - {name: client, type: client}
  - {name: text, type: text}
  - {name: container, type: container}
  - {name: puppet, type: puppet}
dependencies: [[client, server], [container, server]]
"""


@pytest.fixture
def resolver():
    nodedefs = parse_node_definitions(load_yaml_text(DEFS, 'defs.yaml'), 'defs.yaml')
    graph = compile_infra(parse_infra_description_text(INFRA), nodedefs, infra_id='abcdef-123')
    book = AddressBook(graph.order)
    book.add('server', Address('s1', ['203.0.113.1', 'srv1.example.org'], '10.0.0.1'))
    book.add('server', Address('s2', ['203.0.113.2'], '10.0.0.2'))
    return Resolver(graph, nodedefs, book)


def test_helpers_in_a_yaml_template(resolver):
    resolved = resolver.resolve('client', 'node-1')
    text = resolved.context.user_data
    assert text.startswith('#cloud-config\n')
    data = yaml.safe_load(text)
    assert data['write_files'][0]['content'] == \
        "203.0.113.1 10.0.0.1 ['203.0.113.1', '203.0.113.2']\n"  # values keep their final newline
    assert data['runcmd'] == ['echo client tmpl-infra hello .']  # undefined names render as ''


def test_text_template_is_used_as_it_is(resolver):
    resolved = resolver.resolve('text', 'node-77')
    assert resolved.context.user_data == '#cloud-config\nruncmd:\n- echo node-77'  # final newline dropped


def test_resource_section_is_rendered_with_cut(resolver):
    assert resolver.resolve('server', 'n').resource == {'type': 'dummy', 'name': 'srv-abcd'}


def test_docker_context_with_context_variables_and_filters(resolver):
    context = resolver.resolve('container', 'n').context
    assert context.env == ['TARGET=203.0.113.1', 'PORT=8080']
    assert context.command == ['sh', '-c', 'echo HELLO | b64=eA==']


def test_puppet_solo_variables(resolver):
    text = resolver.resolve('puppet', 'n').context.user_data
    assert yaml.safe_load(text)['runcmd'] == ['m1 m2', "{'user': 'hello'}"]


def test_getip_of_a_node_without_instances_is_a_clear_error(resolver):
    resolver.addresses = AddressBook(resolver.graph.order)
    with pytest.raises(TemplateError, match=r"node 'client': contextualisation.context_template"
                                            r".write_files.0.content: getip\('server'\): node "
                                            r"'server' has no instance with an address"):
        resolver.resolve('client', 'n')


def test_getip_without_a_name_uses_the_first_node_like_the_original():
    book = AddressBook(['a', 'b'])
    book.add('b', Address('x', ['1.2.3.4']))
    warnings = []
    book.warn = warnings.append
    assert book.getip(None) == '1.2.3.4'
    assert "using node 'b'" in warnings[0]


@pytest.mark.parametrize('template', [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    '{{ cut.__globals__ }}',
    "{{ getip.__self__.__dict__ }}",
    "{{ ().__class__.__base__.__subclasses__() }}",
])
def test_the_sandbox_blocks_python_internals(template):
    context = {'cut': lambda *a: '', 'getip': AddressBook([]).getip}
    with pytest.raises(TemplateError):
        rendered = templates.render(template, context, what='t')
        # an attribute the sandbox hides renders as undefined (''), never as internals
        assert rendered == ''
        raise TemplateError('rendered nothing')


def test_cmd_is_refused_by_default_and_runs_when_allowed(tmp_path):
    with pytest.raises(TemplateError, match='cmd\\(\\) is disabled because it runs a command on the '
                                            'Occopus host; set allow_cmd: true'):
        templates.render("{{ cmd('echo hi') }}", {'cmd': make_cmd(False)}, what='t')
    assert templates.render("{{ cmd('echo', 'hi there') }}", {'cmd': make_cmd(True)}) == 'hi there'
    with pytest.raises(TemplateError, match=r"cmd\('false'\) exited with 1"):
        templates.render("{{ cmd('false') }}", {'cmd': make_cmd(True)})


def test_syntax_errors_name_the_line():
    assert templates.syntax_error('a\nb {{ x \n') == (2, "unexpected end of template, expected 'end of print statement'.")


# -- the command line ------------------------------------------------------------------------

def test_render_command_json_and_text(occo, tmp_path):
    write(tmp_path, {'defs.yaml': DEFS, 'infra.yaml': INFRA, 'addresses.yaml': 'server: [5.5.5.5, 6.6.6.6]\n'})
    assert occo.run('occopus-import', tmp_path / 'defs.yaml').returncode == 0
    before = occo.snapshot()
    result = occo.run('occopus-build', '--dry-run', '--render', '--format', 'json',
                      '--addresses', tmp_path / 'addresses.yaml', tmp_path / 'infra.yaml')
    assert result.returncode == 0, result.stderr
    rendered = json.loads(result.stdout)
    assert list(rendered) == ['server', 'text', 'puppet', 'client', 'container']
    assert yaml.safe_load(rendered['client'])['write_files'][0]['content'] == \
        "5.5.5.5 5.5.5.5 ['5.5.5.5', '6.6.6.6']\n"
    assert yaml.safe_load(rendered['container']) == {'env': ['TARGET=5.5.5.5', 'PORT=8080'],
                                                     'command': ['sh', '-c', 'echo HELLO | b64=eA==']}
    assert rendered['server'] == ''
    assert occo.snapshot() == before  # nothing written
    text = occo.run('occopus-build', '--dry-run', '--render', tmp_path / 'infra.yaml')
    assert text.returncode == 0
    assert '==> client (implementation #0, dummy) <==\n#cloud-config\n' in text.stdout
    assert '192.0.2.1 192.0.2.1' in text.stdout  # placeholder: node 1 gets 192.0.2.1
    assert '==> server (implementation #0, dummy) <==\n(no user data)\n' in text.stdout


def test_render_reports_a_cloud_config_that_does_not_parse(occo, tmp_path):
    write(tmp_path, {'defs.yaml': "'node_def:bad':\n  - resource: {type: dummy}\n"
                                  '    contextualisation:\n      type: cloudinit\n'
                                  '      context_template: "#cloud-config\\nruncmd:\\n- a\\n b: {{ x }}\\n"\n',
                     'infra.yaml': 'infra_name: r\nuser_id: u\nnodes: [{name: broken, type: bad}]\n'})
    assert occo.run('occopus-import', tmp_path / 'defs.yaml').returncode == 0
    result = occo.run('occopus-build', '--dry-run', '--render', tmp_path / 'infra.yaml')
    assert result.returncode == 1
    assert result.stderr == ("occopus-build: error: node 'broken': contextualisation.context_template: "
                             'the rendered cloud-config is not valid YAML at line 4: mapping values '
                             'are not allowed here (fix the template so that it renders to YAML)\n')


def test_render_flags_need_dry_run(occo, tmp_path):
    result = occo.run('occopus-build', '--render', tmp_path / 'x.yaml')
    assert result.returncode == 2 and '--render and --addresses go with --dry-run' in result.stderr
