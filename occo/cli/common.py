"""What every console script shares: common options, error reporting, exit codes.

Kept light: importing this module must not import YAML, Redis, Jinja or any cloud SDK, so
that ``-h`` answers at once.
"""
from __future__ import annotations

import argparse
import re
import os
import sys
from typing import Any, Callable, List, Mapping, Optional

from occo import __version__
from occo.errors import EXIT_ERROR, EXIT_INTERRUPTED, OccoError
from occo.redact import mask_known, printable

DEBUG_ENV = 'OCCOPUS_DEBUG'


class _Parser(argparse.ArgumentParser):
    """argparse, with the arguments it quotes in its errors made safe for the terminal."""

    def error(self, message: str) -> Any:  # type: ignore[override]
        super().error(printable(message, keep_newlines=True))


def make_parser(prog: str, description: str, *, cfg: bool = True,
                auth: bool = True) -> argparse.ArgumentParser:
    """An argument parser with the options every command has."""
    parser = _Parser(prog=prog, description=description)
    parser.add_argument('--version', action='version', version=f'%(prog)s {__version__}')
    if cfg:
        parser.add_argument('--cfg', dest='cfg_path', metavar='CFG_PATH',
                            help='loads configuration from CFG_PATH file')
    if auth:
        parser.add_argument('--auth_data_path', metavar='AUTH_DATA_PATH',
                            help='path to Occopus authorisation file')
    return parser


def add_infra_id(parser: argparse.ArgumentParser, *, required: bool, help: str) -> None:
    """``-i INFRA_ID`` with both long spellings the original used."""
    parser.add_argument('-i', '--infra_id', '--infraid', dest='infra_id', metavar='INFRA_ID',
                        required=required, help=help)


def one_line(text: Any) -> str:
    """``text`` on one line, fit for a terminal: line breaks become spaces and every other
    control character (ESC, CR, NUL, C1, bidirectional overrides, ...) an escape such as
    ``\\x1b`` or ``\\u202e``, so that nothing read from an input file can drive the terminal."""
    return printable(mask_known(' '.join(str(text).split('\n'))))


def warn(prog: str, message: str) -> None:
    print(f'{prog}: warning: {one_line(message)}', file=sys.stderr)


def _log_warnings(prog: str) -> None:
    """Warnings logged by the library and plugins appear as ``<prog>: warning: ...``."""
    import logging

    class OneLine(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            return f'{prog}: {record.levelname.lower()}: {one_line(record.getMessage())}'
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(OneLine())
    logger = logging.getLogger('occo')
    logger.handlers[:] = [handler]
    logger.setLevel(logging.WARNING)
    logger.propagate = False


def _refuse_unknown_options(parser: argparse.ArgumentParser, argv: List[str]) -> None:
    """An unknown option is the mistake to report, not the positional argument it displaced
    (``occopus-build -l`` would otherwise say "required: infra_def").  Exits 2 like argparse."""
    known = parser._option_string_actions  # the options argparse itself accepts
    for word in argv:
        if word == '--':
            return
        if not word.startswith('-') or word == '-' or re.fullmatch(r'-\d+(\.\d*)?', word):
            continue
        name = word.split('=', 1)[0]
        if name in known or (name.startswith('--') and any(k.startswith(name) for k in known)):
            continue
        if not name.startswith('--') and name[:2] in known:
            continue  # -t5, or short flags run together
        parser.error(f'unrecognized arguments: {word}')


def run(prog: str, parser: argparse.ArgumentParser, command: Callable[[argparse.Namespace], int],
        argv: Optional[List[str]] = None) -> int:
    """Parse ``argv``, run ``command`` and turn every failure into a one-line message and an
    exit code (1 error, 2 usage or not implemented, 130 interrupted); never a traceback."""
    _refuse_unknown_options(parser, sys.argv[1:] if argv is None else list(argv))
    args = parser.parse_args(argv)
    _log_warnings(prog)
    try:
        return command(args)
    except OccoError as exc:
        print(f'{prog}: error: {one_line(exc)}', file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f'{prog}: interrupted', file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        sys.stderr.close()  # the reader went away (e.g. `| head`); nothing more to say
        return EXIT_ERROR
    except Exception as exc:  # a bug of ours: say so in one line, trace only on request
        if os.environ.get(DEBUG_ENV):
            raise
        print(f'{prog}: internal error: {type(exc).__name__}: {one_line(exc)} '
              f'(please report it; set {DEBUG_ENV}=1 to see the traceback)', file=sys.stderr)
        return EXIT_ERROR


def interrupt_on_sigterm() -> None:
    """Treat SIGTERM like Ctrl+C, so that a killed command still cleans up after itself."""
    import signal

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, interrupt)


def reporter(prog: str) -> Callable[[str], None]:
    """Progress lines on stderr, prefixed with the command's name."""
    def report(message: str) -> None:
        print(f'{prog}: {one_line(message)}', file=sys.stderr)
    return report


def plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def open_session(prog: str, args: argparse.Namespace, **config_options: Any) -> Any:
    """An :class:`occo.api.Occopus` for the configuration and authentication files the options
    and environment choose (a missing --auth_data_path file is an error at once)."""
    from occo.api import Occopus
    from occo.config import load_auth_data, load_config
    config = load_config(getattr(args, 'cfg_path', None), **config_options)
    for message in config.warnings:
        warn(prog, message)
    auth = load_auth_data(args.auth_data_path) if hasattr(args, 'auth_data_path') else None
    return Occopus(config, auth=auth, warn=lambda message: warn(prog, message))


def health_text(health: Mapping[str, Any]) -> str:
    """An implementation's health as plans and reports print it: ``healthy``, ``half-open:
    ...`` or ``open until 04:52:10 (2 failure(s) in a row: why)``."""
    import time
    if health.get('state') == 'half-open':
        return f"half-open: the next create tries it ({health.get('reason', '')})"
    if health.get('state') != 'open':
        return 'healthy'
    until = time.strftime('%H:%M:%S', time.localtime(float(health.get('until', 0))))
    return (f"open until {until} ({health.get('failures')} failure(s) in a row: "
            f"{health.get('reason', '')})")
