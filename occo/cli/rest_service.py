"""occopus-rest-service: serve the REST API."""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from occo.cli.common import make_parser, run
from occo.errors import NotImplementedYet

PROG = 'occopus-rest-service'


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser(PROG, 'Launches Occopus as a web service that can create, maintain and '
                         'manipulate infrastructures through a REST interface.')
    parser.add_argument('--host', metavar='HOST',
                        help='sets the host for the web service to be assigned to [default: 127.0.0.1]')
    parser.add_argument('--port', type=int, metavar='PORT',
                        help='sets the port for the web service to be assigned to [default: 5000]')
    parser.add_argument('--parallelize', action='store_true',
                        help='parallelize processing instructions (default: sequential)')
    return parser


def command(args: argparse.Namespace) -> int:
    raise NotImplementedYet('the REST service is not implemented yet in this release')


def main(argv: Optional[List[str]] = None) -> int:
    return run(PROG, build_parser(), command, argv)


if __name__ == '__main__':
    sys.exit(main())
