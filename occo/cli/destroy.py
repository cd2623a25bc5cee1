"""occopus-destroy: destroy an infrastructure built by Occopus."""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from occo.cli.common import add_infra_id, make_parser, run
from occo.errors import NotImplementedYet

PROG = 'occopus-destroy'


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser(PROG, 'Destroys an infrastructure built previously by Occopus. All the '
                         'nodes are destroyed, no recovery is possible.')
    add_infra_id(parser, required=True, help='provides the identifier of the infrastructure to destroy')
    return parser


def command(args: argparse.Namespace) -> int:
    raise NotImplementedYet('destroying infrastructures is not implemented yet in this release')


def main(argv: Optional[List[str]] = None) -> int:
    return run(PROG, build_parser(), command, argv)


if __name__ == '__main__':
    sys.exit(main())
