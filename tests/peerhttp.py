"""What the loopback fakes of clouds share: an HTTP server in a thread of the test process
(``with SomePeer() as peer: peer.url``) and the command line that serves one on its own
(``python tests/novapeer.py --port 8774``) for trying a handler by hand."""
from __future__ import annotations

import argparse
import json
import ssl
import sys
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, List, Optional, Type


class RoutedHandler(BaseHTTPRequestHandler):
    """A fake's request handler: every method goes to :meth:`dispatch` with its verb."""

    def dispatch(self, verb: str) -> None:
        raise NotImplementedError

    def do_GET(self) -> None:  # noqa: N802 - http.server's names
        self.dispatch('GET')

    def do_POST(self) -> None:  # noqa: N802
        self.dispatch('POST')

    def do_PUT(self) -> None:  # noqa: N802
        self.dispatch('PUT')

    def do_DELETE(self) -> None:  # noqa: N802
        self.dispatch('DELETE')


class QuietServer(ThreadingHTTPServer):
    """A threading HTTP server that says nothing when a client goes away mid-answer (the
    handlers under test stop reading answers that are too long, by design) or refuses its
    certificate."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError, ssl.SSLError)):
            super().handle_error(request, client_address)


class ThreadedPeer:
    """A fake's HTTP server on ``host:port`` (0: a free port), served by a daemon thread once
    entered; :meth:`release` (a hook) lets held answers go before it shuts down."""

    name = 'peer'

    def __init__(self, handler: Type[BaseHTTPRequestHandler], host: str = '127.0.0.1',
                 port: int = 0) -> None:
        self.server = QuietServer((host, port), handler)
        self.url = f'http://{host}:{self.server.server_address[1]}'
        self.thread = threading.Thread(target=self.server.serve_forever, name=self.name,
                                       daemon=True)

    def __enter__(self) -> 'ThreadedPeer':
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
        self.server.shutdown()
        self.server.server_close()

    def release(self) -> None:
        """Let go of answers a test holds back (peers that hold some override this)."""


def serve(description: str, make: Callable[[str, int, bool], ThreadedPeer],
          banner: Callable[[ThreadedPeer], str], argv: Optional[List[str]] = None) -> int:
    """Serve the peer ``make(host, port, verbose)`` makes in the foreground until Ctrl+C,
    after printing ``banner(peer)`` (where it listens and what it accepts)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument('--host', default='127.0.0.1',
                        help='address to listen on (default: 127.0.0.1)')
    parser.add_argument('--port', type=int, default=0, help='port (default: a free one)')
    parser.add_argument('--verbose', action='store_true', help='log every request on stderr')
    args = parser.parse_args(argv)
    peer = make(args.host, args.port, args.verbose)
    print(banner(peer), flush=True)
    try:
        peer.server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        peer.server.server_close()
    return 0


class PeerAdmin:
    """The test's side of a fake: its URL and its admin API (``/_peer/...``, JSON)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def _call(self, method: str, path: str, body: Optional[Dict[str, Any]] = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f'{self.url}{path}', data=data, method=method,
                                         headers={'Content-Type': 'application/json'})
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.loads(answer.read() or b'null')
