"""Parse and compile alone, in-process, at several sizes: is the cost per node flat?

For each size N (default 1,000, 5,000 and 10,000 nodes in 5 dependency levels) writes two
descriptions and times, in this process, loading the file with its schema checks
(``load_infra_description``) and compiling it against the node definitions (``compile_infra``):

* ``declared``: the infrastructure of build_dummy.py and build_10k.py, dependencies declared;
* ``inferred``: the same nodes, but each node's contextualisation asks for the address of the
  node before it (``getip(variables.peer)``) and only every other dependency is declared, so
  that compiling renders every node's template and infers half of the edges (with warnings).

Each figure is the best of ``--repeat`` runs.  Prints one JSON line: seconds and seconds per
1,000 nodes for each size and workload, and for each workload the ratio of the cost per node at
the largest size to that at the smallest (1.0 is perfectly flat).
Usage: .venv/bin/python benchmarks/compile_scaling.py [--sizes 1000,5000,10000] [--levels L]
       [--repeat R]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Dict, List

from _common import write_dummy_infra

from occo.compiler import compile_infra
from occo.descriptions import loader
from occo.descriptions.infra import load_infra_description
from occo.descriptions.nodedefs import load_node_definitions

CLIENT = """\
'node_def:bench_client':
  - resource: {type: dummy, boot_time: 0}
    contextualisation:
      type: cloudinit
      context_template: |
        #cloud-config
        runcmd:
          - echo {{ name }} {% if variables.peer %}{{ getip(variables.peer) }}{% endif %}
    health_check: {ping: false}
"""


def write_inferred_infra(folder: Path, nodes: int, levels: int) -> Path:
    """Node i asks for the address of node i - 1 of the level before; every other such
    dependency is declared, the rest must be inferred from the template."""
    (folder / 'nodes.yaml').write_text(CLIENT)
    lines = ['infra_name: bench', 'user_id: bench@example.com', 'nodes:']
    lines += [f'  - {{name: n{i}, type: bench_client'
              + (f', variables: {{peer: n{i - 1}}}' if i % levels else '') + '}'
              for i in range(nodes)]
    deps = [f'  - [n{i}, n{i - 1}]' for i in range(nodes) if i % levels and i % 2]
    if deps:
        lines += ['dependencies:'] + deps
    (folder / 'infra.yaml').write_text('\n'.join(lines) + '\n')
    return folder


def measure(folder: Path, repeat: int) -> Dict[str, float]:
    nodedefs = load_node_definitions(str(folder / 'nodes.yaml'))
    best = {'parse_s': float('inf'), 'compile_s': float('inf')}
    for _ in range(repeat):
        start = time.perf_counter()
        desc = load_infra_description(str(folder / 'infra.yaml'))
        parsed = time.perf_counter()
        graph = compile_infra(desc, nodedefs)
        compiled = time.perf_counter()
        best['parse_s'] = min(best['parse_s'], parsed - start)
        best['compile_s'] = min(best['compile_s'], compiled - parsed)
        edges, inferred = len(graph.edges), sum(e.inferred for e in graph.edges)
        del desc, graph
    return dict(best, edges=edges, inferred_edges=inferred)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--sizes', default='1000,5000,10000',
                        type=lambda text: [int(n) for n in text.split(',')])
    parser.add_argument('--levels', type=int, default=5)
    parser.add_argument('--repeat', type=int, default=3)
    args = parser.parse_args()
    writers = {'declared': lambda f, n: write_dummy_infra(f, n, args.levels, 0.0),
               'inferred': lambda f, n: write_inferred_infra(f, n, args.levels)}
    results: Dict[str, List[Dict[str, float]]] = {}
    for workload, write in writers.items():
        for nodes in args.sizes:
            with tempfile.TemporaryDirectory(prefix='occo-bench-') as folder:
                figures = measure(write(Path(folder), nodes), args.repeat)
            total = figures['parse_s'] + figures['compile_s']
            results.setdefault(workload, []).append({
                'nodes': nodes, 'edges': figures['edges'], 'inferred_edges': figures['inferred_edges'],
                'parse_s': round(figures['parse_s'], 4), 'compile_s': round(figures['compile_s'], 4),
                'parse_s_per_1k': round(1000 * figures['parse_s'] / nodes, 4),
                'compile_s_per_1k': round(1000 * figures['compile_s'] / nodes, 4),
                'total_s_per_1k': round(1000 * total / nodes, 4)})
    flatness = {workload: round(rows[-1]['total_s_per_1k'] / rows[0]['total_s_per_1k'], 2)
                for workload, rows in results.items()}
    print(json.dumps({'benchmark': 'compile_scaling', 'levels': args.levels, 'repeat': args.repeat,
                      'libyaml': getattr(loader, 'FAST_LOADER', None) is not None, 'results': results,
                      'per_node_cost_ratio_largest_to_smallest': flatness}))


if __name__ == '__main__':
    main()
