"""occopus-scale: request more or fewer instances of a node."""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from occo.cli.common import add_infra_id, make_parser, run
from occo.errors import NotImplementedYet

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


def command(args: argparse.Namespace) -> int:
    raise NotImplementedYet('scaling is not implemented yet in this release')


def main(argv: Optional[List[str]] = None) -> int:
    return run(PROG, build_parser(), command, argv)


if __name__ == '__main__':
    sys.exit(main())
