"""occopus-build: deploy an infrastructure (or, with --dry-run, check and plan it)."""
from __future__ import annotations

import argparse
import sys
from typing import Any, Dict, List, Optional

from occo.cli.common import add_infra_id, make_parser, open_session, plural, run
from occo.errors import NotImplementedYet

PROG = 'occopus-build'


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser(PROG, 'Deploys an infrastructure based on an infrastructure description '
                         'and configuration. On error, or on Ctrl+C, everything created is rolled '
                         'back. Prints the identifier of the infrastructure on success.')
    parser.add_argument('--parallelize', action='store_true',
                        help='parallelize processing instructions (default: sequential)')
    parser.add_argument('--listips', action='store_true',
                        help='on exit it logs the list of node and ip addresses')
    add_infra_id(parser, required=False,
                 help='use INFRA_ID as the identifier; if it exists, update it to the description')
    parser.add_argument('--dry-run', action='store_true',
                        help='check the description against the imported node definitions and '
                             'print the plan; nothing is created or stored')
    parser.add_argument('infra_def', help='file containing an infrastructure definition')
    return parser


def _candidates(candidates: List[Dict[str, Any]]) -> str:
    parts = []
    for cand in candidates:
        details = ' '.join(f'{k}={v}' for k, v in cand.items() if k not in ('index', 'type'))
        parts.append(f"#{cand['index']} {cand['type']}" + (f' ({details})' if details else ''))
    return '; '.join(parts)


def print_plan(dry: Any, given_id: bool = False) -> None:
    graph, plan = dry.graph, dry.plan
    inferred = {(e.dependent, e.dependee) for e in graph.edges if e.inferred}
    print(f"Plan for infrastructure '{plan.infra_name}' (dry run: nothing is created or stored)")
    if given_id:
        print(f'   id: {plan.infra_id}')
    for number, node in enumerate(plan.nodes, 1):
        print(f'{number:3}. {node.name}: create {plural(node.target - node.existing, "instance")} '
              f'(min {node.minimum}, max {node.maximum})')
        print(f'       type: {node.type}')
        deps = [dep + (' (inferred from templates)' if (node.name, dep) in inferred else '')
                for dep in node.depends_on]
        print(f"       depends on: {', '.join(deps) if deps else 'nothing'}")
        print(f'       implementations: {_candidates(node.candidates)}')
    print(f'{plural(len(plan.nodes), "node")}, {plural(len(plan.creates), "instance")} to create, '
          f'in {plural(len(graph.levels), "dependency level")}; the description is valid.')


def command(args: argparse.Namespace) -> int:
    if not args.dry_run:
        raise NotImplementedYet('building infrastructures is not implemented yet in this release; '
                                'use --dry-run to check and plan one')
    session = open_session(PROG, args)
    dry = session.dry_run(args.infra_def, infra_id=args.infra_id)
    print_plan(dry, given_id=bool(args.infra_id))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    return run(PROG, build_parser(), command, argv)


if __name__ == '__main__':
    sys.exit(main())
