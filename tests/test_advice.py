"""What a dry run says beyond "valid": tutorial placeholders left in, and template names that
nothing defines."""
from __future__ import annotations

from conftest import write
from test_build import import_ok


def test_placeholders_and_undefined_template_names_are_warned_about(occo, tmp_path):
    write(tmp_path, {
        'nodes.yaml': "'node_def:web':\n"
                      '  - resource: {type: dummy, name: replace_with_name_of_your_vm}\n'
                      '    contextualisation:\n'
                      '      type: cloudinit\n'
                      '      context_template:\n'
                      '        runcmd:\n'
                      '          - echo {{ variables.colour }} {{ variables.size }} {{ colur }}\n'
                      '          - echo {{ infra_id }} {{ getip(name) }} {{ range(3) | list }}\n',
        'infra.yaml': 'infra_name: w\nuser_id: u\nvariables: {colour: blue, key: replace_with_key}\n'
                      'nodes: [{name: web, type: web}]\n'})
    import_ok(occo, tmp_path / 'nodes.yaml')
    before = occo.snapshot()
    result = occo.run('occopus-build', '--dry-run', tmp_path / 'infra.yaml')
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip().endswith('the description is valid.')
    assert result.stderr.splitlines() == [
        "occopus-build: warning: 2 value(s) still hold a tutorial's placeholder (replace_with_...): "
        "node 'web' variables.key, node 'web' resource.name; put your own values there before building",
        "occopus-build: warning: node 'web': contextualisation.context_template.runcmd.0 uses "
        "'colur', which no template name defines (it renders as empty text)",
        "occopus-build: warning: node 'web': contextualisation.context_template.runcmd.0 uses "
        'variables.size, which the description does not define (it renders as empty text)',
    ]
    assert occo.snapshot() == before


def test_a_clean_description_gets_no_advice(occo, tmp_path):
    write(tmp_path, {'nodes.yaml': "'node_def:web':\n  - resource: {type: dummy}\n",
                     'infra.yaml': 'infra_name: w\nuser_id: u\nnodes: [{name: web, type: web}]\n'})
    import_ok(occo, tmp_path / 'nodes.yaml')
    result = occo.run('occopus-build', '--dry-run', tmp_path / 'infra.yaml')
    assert (result.returncode, result.stderr) == (0, '')
