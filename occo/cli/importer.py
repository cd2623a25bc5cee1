"""occopus-import: check node definitions and store them in the database."""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from occo.cli.common import make_parser, open_session, run

PROG = 'occopus-import'


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser(PROG, 'Imports i.e. loads the node definitions from file to the database '
                         'behind Occopus. Each time a node definition (or a file it imports) '
                         'changes, this command must be used again.', auth=False)
    parser.add_argument('--redisconf', metavar='REDISCONF',
                        help='loads database access configuration from REDISCONF file')
    parser.add_argument('datafile', help='file containing node definitions')
    return parser


def command(args: argparse.Namespace) -> int:
    session = open_session(PROG, args, redis_config=args.redisconf)
    result = session.import_nodes(args.datafile)
    print(f"Successfully imported nodes: {', '.join(result.names)}")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    return run(PROG, build_parser(), command, argv)


if __name__ == '__main__':
    sys.exit(main())
