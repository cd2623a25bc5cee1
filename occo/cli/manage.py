"""occopus-manage (alias occopus-maintain): keep infrastructures at their declared shape."""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from occo.cli.common import add_infra_id, make_parser, run
from occo.errors import NotImplementedYet

PROG = 'occopus-manage'
ALIAS = 'occopus-maintain'


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = make_parser(prog, 'Attaches to infrastructures deployed by Occopus and manages them '
                         '(heals failed nodes, applies scaling requests); also lists the '
                         'infrastructures Occopus knows.')
    add_infra_id(parser, required=False, help='provides the identifier of the infrastructure to manage')
    parser.add_argument('-l', '--list', action='store_true',
                        help='list the active infrastructures in the Occopus database')
    parser.add_argument('-t', '--interval', type=float, default=10.0, metavar='INTERVAL',
                        help='specifies the time between management sessions (default: 10)')
    parser.add_argument('-c', '--cyclic', action='store_true', help='performs continuous management')
    parser.add_argument('-r', '--report', action='store_true', help='reports about the infrastructure')
    parser.add_argument('--parallelize', action='store_true',
                        help='parallelize processing instructions (default: sequential)')
    parser.add_argument('-o', '--output', metavar='FILE',
                        help='with --report: write the addresses of every instance to FILE, '
                             'one line per instance')
    parser.add_argument('-f', '--filter', metavar='NODENAME',
                        help='with --report: only nodes whose name contains NODENAME')
    return parser


def command(args: argparse.Namespace) -> int:
    raise NotImplementedYet('managing infrastructures is not implemented yet in this release')


def main(argv: Optional[List[str]] = None, prog: str = PROG) -> int:
    return run(prog, build_parser(prog), command, argv)


def maintain_main(argv: Optional[List[str]] = None) -> int:
    """``occopus-maintain``: the original's name, same flags."""
    return main(argv, prog=ALIAS)


if __name__ == '__main__':
    sys.exit(main())
