"""occopus-destroy: destroy an infrastructure built by Occopus."""
from __future__ import annotations

import argparse
import sys
from typing import Any, List, Optional, Sequence

from occo.cli.common import add_infra_id, interrupt_on_sigterm, make_parser, open_session, reporter, run
from occo.redact import printable

PROG = 'occopus-destroy'


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser(PROG, 'Destroys an infrastructure built previously by Occopus. All the '
                         'nodes are destroyed, no recovery is possible.')
    add_infra_id(parser, required=True, help='provides the identifier of the infrastructure to destroy')
    parser.add_argument('--parallelize', action='store_true',
                        help='drop the instances of a dependency level in parallel (default: '
                             'sequential, or the configuration)')
    parser.add_argument('--dry-run', action='store_true',
                        help='list what would be destroyed: the recorded instances and every '
                             "resource the clouds hold tagged with the infrastructure's id that no "
                             'record knows (left by a killed build); nothing is dropped')
    parser.add_argument('--forget-unreachable', action='store_true',
                        help='forget instances whose create was under way on a cloud that cannot '
                             'be asked for them now (a cloud gone for good); what they made, if '
                             'anything, stays tagged with the infrastructure id')
    return parser


def print_plan(infra_id: str, instances: Sequence[Any]) -> None:
    """One line per resource that occopus-destroy -i would drop, dependents first."""
    untracked = [i for i in instances if i.untracked]
    print(f'dry run: nothing is dropped. occopus-destroy -i {infra_id} would drop '
          f'{plural(len(instances) - len(untracked), "recorded instance")} and '
          f'{plural(len(untracked), "resource")} no record knows:')
    for instance in instances:
        where = f'{instance.resource_type} {instance.extra.get("what", "resource")} ' \
                f'{printable(instance.instance_id or "(not created yet)")}'
        if instance.untracked:
            print(f'  untracked  {where}  tagged for node {printable(instance.node)} '
                  f'({printable(instance.node_id)})')
        else:
            print(f'  {instance.state.value:<9}  {where}  node {printable(instance.node)} '
                  f'({instance.node_id})')


def plural(count: int, noun: str) -> str:
    return f'{count} {noun}{"" if count == 1 else "s"}'


def command(args: argparse.Namespace) -> int:
    session = open_session(PROG, args)
    if args.dry_run:
        print_plan(args.infra_id, session.destroy_plan(args.infra_id, report=reporter(PROG)))
        return 0
    interrupt_on_sigterm()
    count = session.destroy(args.infra_id, parallelize=True if args.parallelize else None,
                            report=reporter(PROG), forget_unreachable=args.forget_unreachable)
    print(f'Destroyed infrastructure {args.infra_id} ({plural(count, "instance")})')
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    return run(PROG, build_parser(), command, argv)


if __name__ == '__main__':
    sys.exit(main())
