"""occopus-manage (alias occopus-maintain): keep infrastructures at their declared shape."""
from __future__ import annotations

import argparse
import math
import json
import signal
import sys
import threading
import time
from typing import Any, Dict, List, Optional

from occo.cli.common import (add_infra_id, health_text, make_parser, open_session, plural,
                             reporter, run)
from occo.redact import printable
from occo.errors import EXIT_INTERRUPTED, BuildError, LeaseHeld, UsageError

PROG = 'occopus-manage'
ALIAS = 'occopus-maintain'


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = make_parser(prog, 'Attaches to infrastructures deployed by Occopus and manages them '
                         '(heals failed nodes, applies scaling requests); also lists the '
                         'infrastructures Occopus knows.')
    add_infra_id(parser, required=False, help='provides the identifier of the infrastructure to manage')
    parser.add_argument('-l', '--list', action='store_true',
                        help='list the active infrastructures in the Occopus database')
    parser.add_argument('-a', '--all', action='store_true',
                        help='manage every infrastructure marked maintained (from its build on, '
                             'until --detach); with -c, as one of any number of maintainers on '
                             'any hosts, which share them')
    parser.add_argument('--attach', action='store_true',
                        help='mark the infrastructure (-i) maintained again, for --all')
    parser.add_argument('--detach', action='store_true',
                        help='leave the infrastructure (-i) alone in --all (it keeps running)')
    parser.add_argument('-t', '--interval', type=interval, default=10.0, metavar='INTERVAL',
                        help='specifies the time between management sessions in seconds, at '
                             f'least {MIN_INTERVAL:g} (default: 10)')
    parser.add_argument('-c', '--cyclic', action='store_true', help='performs continuous management')
    parser.add_argument('-r', '--report', action='store_true', help='reports about the infrastructure')
    parser.add_argument('--parallelize', action='store_true',
                        help='parallelize processing instructions (default: sequential)')
    parser.add_argument('-o', '--output', metavar='FILE',
                        help='with --report: write the addresses of every instance to FILE, '
                             'one line per instance')
    parser.add_argument('-f', '--filter', metavar='NODENAME',
                        help='with --report: only nodes whose name contains NODENAME')
    parser.add_argument('--format', choices=('text', 'json'), default='text',
                        help='output format of --report and --list (default: text)')
    parser.add_argument('--events', action='store_true',
                        help="print the infrastructure's event stream (who, what, when, why)")
    return parser


def print_list(infras: List[Dict[str, Any]], form: str) -> None:
    if form == 'json':
        print(json.dumps(infras, indent=2))
        return
    if not infras:
        print('No active infrastructure!')
        return
    print('List of active infrastructures:')
    rows = [(i['infra_id'], i.get('name', '?'), i.get('state', '?'),
             ', '.join(f"{n} {c['ready']}/{c['total']}" for n, c in i['nodes'].items()) or '-')
            for i in infras]
    widths = [max(len(r[k]) for r in rows + [('INFRA ID', 'NAME', 'STATE', '')]) for k in range(3)]
    print(f"{'INFRA ID':<{widths[0]}}  {'NAME':<{widths[1]}}  {'STATE':<{widths[2]}}  "
          'NODES (ready/instances)')
    for row in rows:
        print(f'{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:<{widths[2]}}  {row[3]}')


def print_report(report: Dict[str, Any], args: argparse.Namespace) -> None:
    nodes = {name: data for name, data in report.items() if not args.filter or args.filter in name}
    if args.output:
        print(f'Saving list of node addresses to file "{args.output}"...', file=sys.stderr)
        with open(args.output, 'w', encoding='utf-8') as stream:
            for data in nodes.values():
                for instance in data['instances'].values():
                    address = instance['resource_address']
                    stream.write(' '.join(address if isinstance(address, list) else [address]) + '\n')
        print('Done.', file=sys.stderr)
        return
    if args.format == 'json':
        print(json.dumps(nodes, indent=2))
        return
    print('Report list of nodes/instances/addresses:')
    for name, data in nodes.items():
        scaling = data['scaling']
        print(f"{name}: ({scaling['actual']} of target {scaling['target']}; "
              f"min {scaling['min']}, max {scaling['max']})")
        for node_id, instance in data['instances'].items():
            on = f" on {instance['implementation']}" if instance.get('implementation') else ''
            print(f"  {node_id} ({instance['state']}){on}:")
            address = instance['resource_address']
            for item in address if isinstance(address, list) else [address]:
                print(f'    {item}')
        for entry in data.get('implementations', []):
            if entry['state'] != 'closed':
                print(f"  {entry['implementation']}: {health_text(entry)}")


def print_events(events: List[Dict[str, str]], form: str) -> None:
    if form == 'json':
        print(json.dumps(events, indent=2))
        return
    for entry in events:
        when = time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(float(entry.get('time', 0))))
        node = entry.get('node', '')
        if entry.get('node_id'):
            node += f"/{entry['node_id'][:8]}"
        print(printable('  '.join(part for part in (when, entry.get('who', '?'),
                                                    entry.get('event', '?'), node,
                                                    entry.get('reason', '')) if part)))


MIN_INTERVAL = 0.1


def interval(text: str) -> float:
    """A finite number of seconds of at least MIN_INTERVAL (argparse type: exit 2 otherwise;
    0, a negative number or nan would make a busy loop, inf never passes again)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'must be a number of seconds, got {text!r}') from None
    if not math.isfinite(value) or value < MIN_INTERVAL:
        raise argparse.ArgumentTypeError(f'must be a finite number of seconds of at least '
                                         f'{MIN_INTERVAL:g}, got {text!r}')
    return value


def stop_on_signals(prog: str) -> threading.Event:
    """Ctrl+C and SIGTERM ask the maintainer to stop after the action under way."""
    stop = threading.Event()

    def request_stop(signum: int, frame: Any) -> None:
        if not stop.is_set():
            print(f'{prog}: stopping after the action under way...', file=sys.stderr)
        stop.set()
    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    return stop


def check_modes(args: argparse.Namespace) -> None:
    if args.output and not args.report:
        raise UsageError('-o/--output goes with -r/--report')
    if args.all and (args.infra_id or args.list or args.report or args.events):
        raise UsageError('--all manages every maintained infrastructure: leave out -i, -l, -r '
                         'and --events')
    if (args.attach or args.detach) and not args.infra_id:
        raise UsageError('--attach and --detach go with -i ID')
    if args.attach and args.detach:
        raise UsageError('give either --attach or --detach')


def manage_all(session: Any, args: argparse.Namespace, stop: threading.Event) -> int:
    """``--all``: one pass over every maintained infrastructure, or (``-c``) membership of the
    maintainer fleet until stopped."""
    def told(line: str) -> None:
        print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {printable(line)}", flush=True)

    fleet = session.fleet(interval=args.interval, stop=stop,
                          parallelize=True if args.parallelize else None, told=told)
    if args.cyclic:
        fleet.run()
        return 0
    outcomes = [fleet.pass_once(infra_id) for infra_id in session.maintained()
                if not stop.is_set()]
    for outcome in outcomes:
        if outcome.line:
            told(outcome.line)
    from occo.api import PASS_STATUSES  # loaded with the session already
    count = {status: sum(o.status == status for o in outcomes) for status in PASS_STATUSES}
    print(f"Managed {plural(len(outcomes), 'infrastructure')}: {count['changed']} changed, "
          f"{count['unchanged']} unchanged, {count['held']} held by another process, "
          f"{count['failed']} failed")
    if stop.is_set():
        return EXIT_INTERRUPTED
    return 1 if count['failed'] else 0


def command(args: argparse.Namespace, prog: str) -> int:
    check_modes(args)
    session = open_session(prog, args)
    if args.attach or args.detach:
        (session.attach if args.attach else session.detach)(args.infra_id)
        print(f"Infrastructure {args.infra_id} is {'now' if args.attach else 'no longer'} "
              'maintained by occopus-manage --all')
        return 0
    if args.all:
        return manage_all(session, args, stop_on_signals(prog))
    if not args.infra_id:
        if args.list:
            print_list(session.list_infras(), args.format)
            return 0
        raise UsageError('No infra_id (-i) specified! (or use -l to list the infrastructures)')
    if args.events:
        print_events(session.events(args.infra_id), args.format)
        return 0
    if args.report:
        print_report(session.report(args.infra_id), args)
        return 0
    report = reporter(prog)
    stop = stop_on_signals(prog)
    parallelize = True if args.parallelize else None
    if args.cyclic:
        session.maintain(args.infra_id, interval=args.interval, stop=stop,
                         parallelize=parallelize, report=report)
        return 0
    try:
        result = session.manage_pass(args.infra_id, parallelize=parallelize, stop=stop, report=report)
    except LeaseHeld as exc:
        print(f'{prog}: {exc.message}; not managing it now', file=sys.stderr)
        return 0
    summary = (f'Managed infrastructure {args.infra_id}: {plural(result.created, "instance")} '
               f'created ({result.ready} ready), {result.dropped} dropped; {result.state}')
    if stop.is_set():
        print(f'{summary}; stopped before the pass ended (the next pass carries on)')
        return EXIT_INTERRUPTED
    if result.failures:
        raise BuildError(result.failures, note='the next pass tries again')
    print(summary)
    return 0


def main(argv: Optional[List[str]] = None, prog: str = PROG) -> int:
    return run(prog, build_parser(prog), lambda args: command(args, prog), argv)


def maintain_main(argv: Optional[List[str]] = None) -> int:
    """``occopus-maintain``: the original's name, same flags."""
    return main(argv, prog=ALIAS)


if __name__ == '__main__':
    sys.exit(main())
