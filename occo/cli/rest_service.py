"""occopus-rest-service: serve the REST API (FastAPI, served by uvicorn) and maintain every
infrastructure marked maintained in the background."""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from occo.cli.common import interrupt_on_sigterm, make_parser, open_session, run
from occo.errors import UsageError

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
    session = open_session(PROG, args)
    config = session.config
    host = args.host or config.rest_host
    port = config.rest_port if args.port is None else args.port
    if not 0 <= port <= 65535:
        raise UsageError(f'--port must be a port number (0-65535), got {port}')
    import uvicorn

    from occo.rest.app import create_app
    from occo.rest.service import Service
    service = Service(session, interval=config.rest_interval,
                      parallelize=bool(args.parallelize or config.parallelize))
    app = create_app(service, token=config.rest_token, max_body=config.rest_max_body,
                     cors_origins=list(config.rest_cors_origins))
    session.store.ping()  # a Redis that does not answer is said now, not per request
    # uvicorn stops on SIGINT and SIGTERM, then raises the signal again: as KeyboardInterrupt
    # here (not the default SIGTERM death), so that the builds under way roll back first.
    interrupt_on_sigterm()
    service.start()
    try:
        uvicorn.run(app, host=host, port=port, log_level='warning', access_log=False)
    except KeyboardInterrupt:
        pass  # a service stopped on request: a success, once its builds are cancelled
    finally:
        service.close()
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    return run(PROG, build_parser(), command, argv)


if __name__ == '__main__':
    sys.exit(main())
