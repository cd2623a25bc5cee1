"""occopus-build: deploy an infrastructure (or, with --dry-run, check and plan it)."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Dict, List, Optional

from occo.cli.common import (add_infra_id, interrupt_on_sigterm, make_parser, open_session,
                             health_text, plural, reporter, run)
from occo.errors import UsageError

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
    parser.add_argument('--parallelism', type=int, metavar='N',
                        help='at most N cloud calls at once (implies --parallelize; default: 10, '
                             'or the configuration)')
    parser.add_argument('--dry-run', action='store_true',
                        help='check the description against the imported node definitions and '
                             'print the plan; nothing is created or stored')
    parser.add_argument('--render', action='store_true',
                        help="with --dry-run: print each node's rendered contextualisation instead "
                             'of the plan')
    parser.add_argument('--addresses', metavar='FILE',
                        help='with --render: YAML file of node name -> address used by getip(), '
                             'getprivip() and getipall() (default: 192.0.2.N for node N)')
    parser.add_argument('--format', choices=('text', 'json'), default='text',
                        help='output format (default: text); json prints a build\'s result as '
                             '{"infra_id": ..., "nodes": <the report of occopus-manage -r '
                             '--format json>}, and --dry-run\'s plan and --render\'s text as JSON')
    parser.add_argument('--replace', action='append', default=[], metavar='NODE',
                        help='with -i ID of a live infrastructure: after applying the '
                             'description, replace every instance of NODE one at a time (the '
                             'new one ready before the old one is dropped); may be repeated')
    parser.add_argument('infra_def', help='file containing an infrastructure definition')
    return parser


def _candidates(candidates: List[Dict[str, Any]]) -> str:
    parts = []
    for cand in candidates:
        shown = dict(cand, health=health_text(cand['health'])) if 'health' in cand else cand
        details = ' '.join(f'{k}={v}' for k, v in shown.items() if k not in ('index', 'type'))
        parts.append(f"#{cand['index']} {cand['type']}" + (f' ({details})' if details else ''))
    return '; '.join(parts)


def print_plan(plan: Any, graph: Any, *, given_id: bool = False,
               title: str = 'dry run: nothing is created or stored') -> None:
    """The plan: nodes in dependency order with their counts, dependencies and candidate
    implementations, then the drops."""
    inferred = {(e.dependent, e.dependee) for e in graph.edges if e.inferred}
    print(f"Plan for infrastructure '{plan.infra_name}' ({title})")
    if given_id:
        print(f'   id: {plan.infra_id}')
    for number, node in enumerate(plan.nodes, 1):
        keep = f'; {node.existing} kept' if node.existing else ''
        if node.outdated:
            keep += (f', {node.outdated} of them outdated ({node.outdated_reason}; '
                     f'--replace {node.name} replaces them)')
        held = f'; held back: {node.waiting}' if node.waiting else ''
        print(f'{number:3}. {node.name}: create {plural(node.target - node.existing, "instance")} '
              f'(min {node.minimum}, max {node.maximum}{keep}{held})')
        print(f'       type: {node.type}')
        deps = [dep + (' (inferred from templates)' if (node.name, dep) in inferred else '')
                for dep in node.depends_on]
        print(f"       depends on: {', '.join(deps) if deps else 'nothing'}")
        print(f'       implementations: {_candidates(node.candidates)}')
    for drop in plan.drops:
        print(f'  drop {drop.node}/{drop.node_id}: {drop.reason}')
    drops = f', {plural(len(plan.drops), "instance")} to drop' if plan.drops else ''
    print(f'{plural(len(plan.nodes), "node")}, {plural(len(plan.creates), "instance")} to create'
          f'{drops}, in {plural(len(graph.levels), "dependency level")}; the description is valid.')


def print_update_plan(plan: Any, graph: Any) -> None:
    """An update of a live infrastructure prints its plan before carrying it out."""
    print_plan(plan, graph, title='update of a live infrastructure')
    sys.stdout.flush()


def print_listing(instances: Dict[str, List[Any]], *, listips: bool) -> None:
    """The original's node/instance/address tree, then (--listips) one `node address` line
    per instance."""
    print('List of nodes/instances/addresses:')
    for node, records in instances.items():
        print(f'{node}:')
        for instance in records:
            print(f'  {instance.node_id}:')
            for address in instance.addresses:
                print(f'    {address}')
    if listips:
        for node, records in instances.items():
            for instance in records:
                print(f"{node} {(instance.addresses or [''])[0]}")


def print_rendered(nodes: List[Any], form: str) -> None:
    if form == 'json':
        print(json.dumps({node.node: node.text for node in nodes}, indent=2))
        return
    for node in nodes:
        print(f'==> {node.node} (implementation #{node.implementation}, {node.resource_type}) <==')
        print(node.text.rstrip('\n') if node.text else '(no user data)')


def command(args: argparse.Namespace) -> int:
    if (args.render or args.addresses) and not args.dry_run:
        raise UsageError('--render and --addresses go with --dry-run')
    if args.addresses and not args.render:
        raise UsageError('--addresses goes with --render')
    if args.replace and (args.dry_run or not args.infra_id):
        raise UsageError('--replace goes with -i ID of a live infrastructure (not with --dry-run)')
    if args.parallelism is not None and args.parallelism < 1:
        raise UsageError('--parallelism must be at least 1')
    session = open_session(PROG, args)
    if not args.dry_run:
        interrupt_on_sigterm()
        result = session.build(args.infra_def, infra_id=args.infra_id,
                               parallelize=True if args.parallelize or args.parallelism else None,
                               parallelism=args.parallelism, report=reporter(PROG),
                               on_plan=print_update_plan if args.format == 'text' else None,
                               replace=args.replace)
        if args.format == 'json':
            print(json.dumps({'infra_id': result.graph.infra_id,
                              'nodes': session.report(result.graph.infra_id, live=False)}, indent=2))
            return 0
        print_listing(result.instances, listips=args.listips)
        print(result.graph.infra_id)
        return 0
    if args.render:
        from occo.api import load_addresses
        addresses = load_addresses(args.addresses) if args.addresses else None
        print_rendered(session.render(args.infra_def, args.infra_id, addresses), args.format)
        return 0
    dry = session.dry_run(args.infra_def, infra_id=args.infra_id)
    if args.format == 'json':
        print(json.dumps(dict(dry.plan.to_json(), levels=dry.graph.levels,
                              edges=[vars(e) for e in dry.graph.edges]), indent=2))
    else:
        print_plan(dry.plan, dry.graph, given_id=bool(args.infra_id))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    return run(PROG, build_parser(), command, argv)


if __name__ == '__main__':
    sys.exit(main())
