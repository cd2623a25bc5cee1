"""Build N ec2 nodes in L dependency levels with ``occopus-build --parallelize`` against a
private ``moto_server``, then destroy them.

The commands talk to moto through a counting proxy (``tests/peer_ec2.py``), so the EC2 calls
are counted by action.  Prints one JSON line: wall time of the build and of the destroy, EC2
calls per node (and by action), Redis commands per node, the build's CPU time and peak RSS.
Usage: .venv/bin/python benchmarks/build_ec2.py [--nodes N] [--levels L] [--parallelism P]
"""
from __future__ import annotations

import json
import sys

from _common import ROOT, Bench, arguments, cloud_summary, command, write_dummy_infra

sys.path.insert(0, str(ROOT / 'tests'))
from peer_ec2 import IMAGE_ID, INSTANCE_TYPE, REGION, FaultProxy, MotoServer  # noqa: E402


def main() -> None:
    args = arguments()
    nodes, levels = args['nodes'], args['levels']
    with Bench() as bench, MotoServer(bench.folder / 'moto_server.log') as moto, \
            FaultProxy(moto.url) as proxy:
        folder = write_dummy_infra(bench.folder, nodes, levels, 0)
        section = dict(type='ec2', endpoint=proxy.url, regionname=REGION, image_id=IMAGE_ID,
                       instance_type=INSTANCE_TYPE)
        (folder / 'nodes.yaml').write_text(  # the same infrastructure, on ec2
            "'node_def:bench_node':\n"
            f'  - resource: {json.dumps(section)}\n'
            "    contextualisation: {type: cloudinit, context_template: \"#cloud-config\\n"
            "runcmd: ['echo {{node_id}}']\"}\n")
        (bench.folder / '.occopus').mkdir()
        (bench.folder / '.occopus' / 'auth_data.yaml').write_text(
            f'resource:\n  - type: ec2\n    endpoint: {proxy.url}\n'
            f'    auth_data: {{accesskey: {moto.access}, secretkey: "{moto.secret}"}}\n')
        imported = bench.run(command('occopus-import'), str(folder / 'nodes.yaml'))
        assert imported.returncode == 0, imported.stderr
        built = bench.measure(command('occopus-build'), '--parallelize', '--parallelism',
                              str(args['parallelism']), '-i', 'bench-ec2', str(folder / 'infra.yaml'))
        assert built['exit_code'] == 0, built['stderr'][-2000:]
        made = len(moto.instances('bench-ec2'))
        build_calls = dict(proxy.counts)
        proxy.counts.clear()
        destroyed = bench.measure(command('occopus-destroy'), '--parallelize', '-i', 'bench-ec2')
        assert destroyed['exit_code'] == 0, destroyed['stderr'][-2000:]
        left = len(moto.instances('bench-ec2'))
        destroy_calls = dict(proxy.counts)
    print(json.dumps(dict({
        'benchmark': 'build_ec2', 'nodes': nodes, 'levels': levels,
        'parallelism': args['parallelism']},
        **cloud_summary(nodes, built, destroyed, build_calls, destroy_calls),
        instances_built=made, instances_left=left)))

if __name__ == '__main__':
    main()
