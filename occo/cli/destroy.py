"""occopus-destroy: destroy an infrastructure built by Occopus."""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from occo.cli.common import add_infra_id, interrupt_on_sigterm, make_parser, open_session, reporter, run

PROG = 'occopus-destroy'


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser(PROG, 'Destroys an infrastructure built previously by Occopus. All the '
                         'nodes are destroyed, no recovery is possible.')
    add_infra_id(parser, required=True, help='provides the identifier of the infrastructure to destroy')
    parser.add_argument('--parallelize', action='store_true',
                        help='drop the instances of a dependency level in parallel (default: '
                             'sequential, or the configuration)')
    return parser


def command(args: argparse.Namespace) -> int:
    session = open_session(PROG, args)
    interrupt_on_sigterm()
    count = session.destroy(args.infra_id, parallelize=True if args.parallelize else None,
                            report=reporter(PROG))
    print(f'Destroyed infrastructure {args.infra_id} ({count} instance{"s" if count != 1 else ""})')
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    return run(PROG, build_parser(), command, argv)


if __name__ == '__main__':
    sys.exit(main())
