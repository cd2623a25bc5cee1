"""Rendering is bounded: rendered text per template (default 1 MB) and render time per template
(default 10 s), each with a one-line error that names the limit and how to raise it."""
from __future__ import annotations

import pytest

from conftest import write
from occo import templates
from occo.errors import TemplateError

NESTED_LOOPS = '{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}'
SILENT_LOOPS = '{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}'
TWO_MB = "{% for i in range(2000) %}{{ 'y' * 1000 }}{% endfor %}"


@pytest.fixture
def limits():
    """Set limits for one test, and restore the defaults after it."""
    yield templates.set_limits
    templates.set_limits()


def test_defaults():
    assert templates.get_limits() == (1_000_000, 10.0)


def test_limits_are_checked_when_set():
    for wrong in [(0, None), (-1, None), (1.5, None), (True, None), (None, 0), (None, -1),
                  (None, float('inf')), (None, float('nan'))]:
        with pytest.raises(ValueError):
            templates.set_limits(*wrong)
    assert templates.get_limits() == (1_000_000, 10.0)


@pytest.mark.parametrize('template', [NESTED_LOOPS, SILENT_LOOPS,
                                      "{% for i in range(100000) %}{% for j in range(100000) %}"
                                      "{% set x = i * j %}{% endfor %}{% endfor %}",
                                      '{% macro m() %}{% endmacro %}{% for i in range(100000) %}'
                                      '{% for j in [1] * 100000 %}{{ m() }}{% endfor %}{% endfor %}'],
                         ids=['writing', 'silent', 'set', 'macro'])
def test_a_long_rendering_is_stopped(limits, template):
    limits(max_bytes=10 ** 9, max_seconds=0.2)
    with pytest.raises(TemplateError) as caught:
        templates.render(template, {}, what="node 'n': contextualisation.context_template")
    assert caught.value.message == (
        "node 'n': contextualisation.context_template: rendering took longer than the limit of "
        '0.2 s per template (raise limits.template_seconds in the configuration file to allow more)')


@pytest.mark.parametrize('template', [TWO_MB, "{{ 'z' * 2000000 }}", '{{ 10 ** 10000000 }}',
                                      "{% for i in range(3) %}{{ 'a' * 400000 }}{% endfor %}"])
def test_a_large_rendering_is_stopped(template):
    with pytest.raises(TemplateError, match=r"^t: .* larger than the limit of 1000000 bytes per "
                                            r'template \(raise limits.template_bytes in the '
                                            r'configuration file to allow more\)$'):
        templates.render(template, {}, what='t')


def test_raised_limits_allow_more(limits):
    limits(max_bytes=3_000_000)
    assert len(templates.render(TWO_MB, {})) == 2_000_000


def test_values_of_one_template_share_its_budget(limits):
    limits(max_bytes=1000)
    with templates.budget():
        templates.render("{{ 'a' * 600 }}", {})
        with pytest.raises(TemplateError, match='larger than the limit of 1000 bytes'):
            templates.render("{{ 'a' * 600 }}", {})
    templates.render("{{ 'a' * 600 }}", {})  # a new template, a new budget


def test_range_behaves_as_before():
    assert templates.render(
        '{{ range(3)|list }} {{ range(3)|length }} {{ range(5)|last }} {{ range(4)|reverse|join }} '
        '{{ 2 in range(3) }} {{ range(2, 10, 3)[1] }} {{ range(3) }} {{ range(4)|sum }} '
        '{% for i in range(2) %}{{ loop.index }}{% endfor %}', {}) == \
        '[0, 1, 2] 3 4 3210 True 5 range(0, 3) 6 12'
    with pytest.raises(TemplateError, match='at most 100000 items'):
        templates.render('{{ range(100001)|length }}', {})


# -- the command line ------------------------------------------------------------------------

DEFS = """\
'node_def:looper':
  - resource: {type: dummy}
    contextualisation:
      type: cloudinit
      context_template:
        runcmd:
          - "%s"
'node_def:plain':
  - resource: {type: dummy}
    contextualisation:
      type: cloudinit
      context_template:
        runcmd: ["echo {{ name }} {{ range(3)|join(',') }}"]
"""


def describe(tmp_path, template):
    return write(tmp_path, {'defs.yaml': DEFS % template,
                            'infra.yaml': 'infra_name: lim\nuser_id: u\nnodes:\n'
                                          '  - {name: fine, type: plain}\n'
                                          '  - {name: loops, type: looper}\n'})


def assert_one_line_error(result, limit):
    assert result.returncode == 1, result.stderr
    assert 'Traceback' not in result.stderr
    # A build also reports its progress (the rollback) before the error; the error is one line.
    lines = result.stderr.splitlines()
    errors = [line for line in lines if line.startswith('occopus-build: error: ')]
    assert errors == lines[-1:], result.stderr
    assert "node 'loops'" in errors[0] and f'raise limits.template_{limit} in the configuration' \
        in errors[0], errors[0]


@pytest.mark.parametrize('template, limit, message', [
    # writes an x per turn: the size limit stops it first
    (NESTED_LOOPS, 'bytes', 'the rendered text is larger than the limit of 1000000 bytes per template'),
    # writes nothing: the time limit stops it (the default, 10 s, for each of the two renderings
    # of a command: the dependency scan and the node's own)
    (SILENT_LOOPS, 'seconds', 'rendering took longer than the limit of 10 s per template'),
], ids=['writing', 'silent'])
def test_dry_run_render_and_build_stop_a_template_that_runs_away(occo, tmp_path, template, limit,
                                                                  message):
    describe(tmp_path, template)
    assert occo.run('occopus-import', tmp_path / 'defs.yaml').returncode == 0
    result = occo.run('occopus-build', '--dry-run', '--render', tmp_path / 'infra.yaml')
    assert_one_line_error(result, limit)
    assert result.stderr == (f"occopus-build: error: node 'loops': contextualisation.context_template"
                             f'.runcmd.0: {message} (raise limits.template_{limit} in the '
                             'configuration file to allow more)\n')
    result = occo.run('occopus-build', tmp_path / 'infra.yaml')
    assert_one_line_error(result, limit)
    assert message in result.stderr
    assert occo.dummy_cloud() == {}  # rolled back


def test_dry_run_render_and_build_stop_a_template_that_writes_too_much(occo, tmp_path):
    describe(tmp_path, TWO_MB)
    assert occo.run('occopus-import', tmp_path / 'defs.yaml').returncode == 0
    result = occo.run('occopus-build', '--dry-run', '--render', tmp_path / 'infra.yaml')
    assert_one_line_error(result, 'bytes')
    assert ("occopus-build: error: node 'loops': contextualisation.context_template.runcmd.0: "
            'the rendered text is larger than the limit of 1000000 bytes per template') in result.stderr
    result = occo.run('occopus-build', tmp_path / 'infra.yaml')
    assert_one_line_error(result, 'bytes')
    assert occo.dummy_cloud() == {}


def test_normal_templates_are_unaffected(occo, tmp_path):
    describe(tmp_path, 'echo {{ range(10)|sum }}')
    assert occo.run('occopus-import', tmp_path / 'defs.yaml').returncode == 0
    result = occo.run('occopus-build', '--dry-run', '--render', tmp_path / 'infra.yaml')
    assert result.returncode == 0, result.stderr
    assert '- echo fine 0,1,2\n' in result.stdout and '- echo 45\n' in result.stdout
