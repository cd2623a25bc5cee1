"""occopus-scale: request more or fewer instances of a node."""
from __future__ import annotations

import argparse
import re
import sys
from typing import List, Optional

from occo.cli.common import add_infra_id, make_parser, open_session, run
from occo.errors import OccoError

PROG = 'occopus-scale'


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser(PROG, 'Scales a given node of an infrastructure up or down by a given '
                         'number. Requests take effect on the next management pass.')
    add_infra_id(parser, required=True,
                 help='provides the identifier of the infrastructure which contains the node to scale')
    parser.add_argument('-n', '--node', required=True, metavar='NODE',
                        help='provides the name of the node to scale')
    parser.add_argument('-c', '--count', '--changescale', dest='count', metavar='COUNT',
                        help='positive/negative number expressing the direction and magnitude of '
                             'scaling (positive: scale up; negative: scale down)')
    parser.add_argument('-s', '--setscale', metavar='COUNT',
                        help='set the number of instances of the node to COUNT')
    parser.add_argument('-f', '--filter', metavar='NODEID_OR_IP',
                        help='scale down the instance with this node id or address')
    return parser


WHOLE = re.compile(r'[+-]?[0-9]+')


def _whole(value: str, message: str) -> int:
    """A whole number written with ASCII digits and an optional sign only (``int()`` would
    also take '١' or '5_0')."""
    if not WHOLE.fullmatch(value):
        raise OccoError(message)
    return int(value)


def command(args: argparse.Namespace) -> int:
    given = [flag for flag, value in (('-c', args.count), ('-s', args.setscale), ('-f', args.filter))
             if value is not None]
    if len(given) > 1:
        raise OccoError(f'Too many arguments: {given[0]} and {given[1]} must not be used at the '
                        'same time!')
    if not given:
        raise OccoError('Too few arguments: at least -c, -s or -f must be specified!')
    change = target = None
    if args.count is not None:
        change = _whole(args.count, 'Positive/negative number must be specified for argument -c!')
        if change == 0:
            raise OccoError('Incorrect argument: value for -c must be different from zero!')
    if args.setscale is not None:
        target = _whole(args.setscale, 'Positive number must be specified for argument -s!')
        if target <= 0:
            raise OccoError('Incorrect argument: value for -s must be greater than zero!')
    if args.filter is not None and not args.filter.strip():
        raise OccoError('Incorrect argument: -f needs the node id or the address of the instance '
                        'to scale down (it was empty)')
    session = open_session(PROG, args)
    pending = session.scale(args.infra_id, args.node, change=change, target=target,
                            selector=args.filter)
    if change is not None and change > 0:
        print(f"Scaling up node '{args.node}' with {change} instances...")
    elif change is not None:
        print(f"Scaling down node '{args.node}' with {-change} instances...")
    elif target is not None:
        print(f"Scaling node '{args.node}' to {target} instances...")
    else:
        print(f"Scaling down instance(s) of node '{args.node}' filtered by '{args.filter}'...")
    print(f'Recorded; the next management pass applies it ({pending} request(s) pending).')
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    return run(PROG, build_parser(), command, argv)


if __name__ == '__main__':
    sys.exit(main())
