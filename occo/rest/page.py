"""The status page at ``/``: the infrastructures, their nodes with target and actual counts,
each instance's state and address, and the latest events, for people.

The route renders the data into plain HTML on the server (so the page works without
JavaScript); ``static/status.js`` then refreshes it in place every few seconds from the JSON
API.  Everything shown is escaped: node names, addresses and event reasons come from users and
clouds.  The page loads nothing but its own two static files.

With a token configured, a browser gives it once as ``/?token=<token>``: the page answers with
a redirect to itself that sets a session cookie holding a read-only credential derived from
the token (:func:`view_credential`), never the token: HttpOnly (no script reads it),
SameSite=Strict, and taken only by GET requests (the page, its files and the API's reads), so
the token leaves the address bar and the history at once, reloads and new tabs work with or
without JavaScript, and a cookie seen by another service on the same host (cookies ignore
ports) can change nothing.
"""
from __future__ import annotations

import hashlib
import hmac
import re
import time
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any, List, Mapping, Optional

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response

from occo.errors import UnknownInfrastructure

#: events shown per infrastructure, newest first
EVENTS_SHOWN = 20
#: the cookie that keeps the token for the page
COOKIE = 'occopus_view'
STATIC = Path(__file__).resolve().parent / 'static'
#: the files served under /static/, with their media types
FILES = {'status.css': 'text/css; charset=utf-8', 'status.js': 'text/javascript; charset=utf-8'}
#: headers of every answer of the page: never cached, nothing from elsewhere, never framed
HEADERS = {
    'Cache-Control': 'no-store',
    'Content-Security-Policy': "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "connect-src 'self'; base-uri 'none'; form-action 'none'; "
                               "frame-ancestors 'none'",
    'Referrer-Policy': 'no-referrer',
    'X-Content-Type-Options': 'nosniff',
}


@dataclass(frozen=True)
class InstanceRow:
    node_id: str
    state: str
    address: str


@dataclass(frozen=True)
class NodeRow:
    name: str
    target: int
    actual: int
    instances: List[InstanceRow]


@dataclass(frozen=True)
class EventRow:
    time: str
    event: str
    node: str
    node_id: str
    reason: str


@dataclass(frozen=True)
class InfraView:
    infra_id: str
    nodes: List[NodeRow]
    events: List[EventRow]  # newest first


def view_credential(token: str) -> str:
    """What the page's cookie holds: a credential derived from the token that only reads
    (the page and the API's GET answers take it), never the token itself."""
    return hmac.new(token.encode(), b'occopus status page: read only', hashlib.sha256).hexdigest()


def viewer(request: Request, token: str) -> bool:
    """True if ``request`` reads (GET) and carries the page's cookie for ``token``."""
    given = request.cookies.get(COOKIE, '')
    return request.method == 'GET' and bool(given) and hmac.compare_digest(
        given.encode(), view_credential(token).encode())


def add_status_page(app: FastAPI, session: Any, token: Optional[str] = None) -> None:
    """Register ``/`` and its static files on ``app``; with ``token``, they need it (as the
    API's bearer header, the page's cookie, or once as ``?token=``)."""

    def matches(given: Optional[str]) -> bool:
        """True if ``given`` is the token (compared in constant time)."""
        return (token is not None and given is not None
                and hmac.compare_digest(given.encode(), token.encode()))

    def allowed(request: Request) -> bool:
        if token is None:
            return True
        scheme, _, value = request.headers.get('authorization', '').partition(' ')
        if scheme.lower() == 'bearer':
            return matches(value.strip())
        return viewer(request, token)

    @app.get('/', include_in_schema=False)
    def status_page(request: Request) -> Response:
        if matches(request.query_params.get('token')):
            answer = RedirectResponse('./', status_code=303, headers=HEADERS)
            answer.set_cookie(COOKIE, view_credential(token or ''), path='/', samesite='strict',
                              httponly=True, secure=request.url.scheme == 'https')
            return answer
        if not allowed(request):
            return HTMLResponse(UNAUTHORISED, status_code=401, headers=dict(
                HEADERS, **{'WWW-Authenticate': 'Bearer'}))
        return HTMLResponse(render_page(collect(session), time.time()), headers=HEADERS)

    @app.get('/static/{name}', include_in_schema=False)
    def static_file(name: str, request: Request) -> Response:
        if name not in FILES:
            return Response('no such file', status_code=404, media_type='text/plain')
        if not allowed(request):
            return Response('the token is needed', status_code=401, media_type='text/plain')
        return FileResponse(STATIC / name, media_type=FILES[name], headers=HEADERS)


# -- the data ----------------------------------------------------------------------------------

def collect(session: Any) -> List[InfraView]:
    """What the page shows: every listed infrastructure, read as the API reads it."""
    views = []
    for summary in session.list_infras():
        infra_id = summary['infra_id']
        try:
            report = session.report(infra_id, live=False)
            events = session.events(infra_id, EVENTS_SHOWN)
        except UnknownInfrastructure:
            continue  # deleted since it was listed
        views.append(view_of(infra_id, report, events))
    return views


def view_of(infra_id: str, report: Mapping[str, Any], events: List[Mapping[str, Any]]) -> InfraView:
    """The page's view of one infrastructure from the API's ``GET /infrastructures/<id>`` and
    ``GET /infrastructures/<id>/events`` bodies."""
    nodes = [NodeRow(name, entry['scaling']['target'], entry['scaling']['actual'],
                     [InstanceRow(node_id, instance['state'], address_text(instance['resource_address']))
                      for node_id, instance in entry['instances'].items()])
             for name, entry in report.items()]
    rows = [EventRow(time_text(e.get('time')), str(e.get('event', '')), str(e.get('node', '')),
                     str(e.get('node_id', '')), str(e.get('reason', ''))) for e in reversed(events)]
    return InfraView(infra_id, nodes, rows)


def address_text(address: Any) -> str:
    """An instance's ``resource_address`` (one address, a list of them, or '') as text."""
    if isinstance(address, list):
        return ', '.join(str(a) for a in address)
    return str(address or '')


def time_text(value: Any) -> str:
    """Epoch seconds as ``YYYY-MM-DD HH:MM:SS`` (UTC), as the page's script writes them."""
    try:
        return time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(float(value)))
    except (TypeError, ValueError, OverflowError, OSError):
        return str(value or '')


def state_class(state: str) -> str:
    return 'state state-' + re.sub(r'[^a-z0-9_-]', '', state.lower())


# -- the HTML (static/status.js builds the same markup from the API) -----------------------------

def render_page(views: List[InfraView], now: float) -> str:
    body = ''.join(render_infra(view) for view in views) or '<p class="empty">No infrastructures.</p>'
    return PAGE.format(updated=escape(time_text(now)), body=body)


def render_infra(view: InfraView) -> str:
    infra = escape(view.infra_id)
    return (f'<section class="infra" data-infra="{infra}">'
            f'<h2>Infrastructure <code>{infra}</code></h2>'
            f'<table class="nodes"><caption>Nodes and instances of {infra}</caption>'
            '<thead><tr><th scope="col">Node</th><th scope="col">Target</th>'
            '<th scope="col">Actual</th><th scope="col">Instance</th><th scope="col">State</th>'
            '<th scope="col">Address</th></tr></thead>'
            f"{''.join(render_node(node) for node in view.nodes)}</table>"
            f'<table class="events"><caption>Latest events of {infra}, newest first</caption>'
            '<thead><tr><th scope="col">Time (UTC)</th><th scope="col">Event</th>'
            '<th scope="col">Node</th><th scope="col">Instance</th><th scope="col">Reason</th>'
            f"</tr></thead><tbody>{''.join(render_event(e) for e in view.events)}</tbody></table>"
            '</section>')


def render_node(node: NodeRow) -> str:
    span = max(1, len(node.instances))
    cells = [f'<td><code>{escape(i.node_id)}</code></td>'
             f'<td><span class="{state_class(i.state)}">{escape(i.state)}</span></td>'
             f'<td>{escape(i.address)}</td>' for i in node.instances] or ['<td></td><td></td><td></td>']
    rows = [f'<tr><th scope="rowgroup" rowspan="{span}">{escape(node.name)}</th>'
            f'<td rowspan="{span}">{node.target}</td><td rowspan="{span}">{node.actual}</td>'
            f'{cells[0]}</tr>']
    rows += [f'<tr>{row}</tr>' for row in cells[1:]]
    return f'<tbody data-node="{escape(node.name)}">{"".join(rows)}</tbody>'


def render_event(event: EventRow) -> str:
    cells = (event.time, event.event, event.node, event.node_id, event.reason)
    return '<tr>' + ''.join(f'<td>{escape(text)}</td>' for text in cells) + '</tr>'


PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Occopus status</title>
<link rel="stylesheet" href="static/status.css">
<script src="static/status.js" defer></script>
</head>
<body>
<header>
<h1>Occopus status</h1>
<p id="status" role="status">As of {updated} UTC (reload the page to update it).</p>
</header>
<main id="infrastructures">{body}</main>
</body>
</html>
"""

UNAUTHORISED = """<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>Occopus status: token needed</title></head>
<body>
<h1>Occopus status: token needed</h1>
<p>This service is protected by a token. Open this page once as <code>/?token=&lt;token&gt;</code>
(the token of the rest section of the configuration, or <code>OCCOPUS_REST_TOKEN</code>);
this browser then keeps it in a cookie until it is closed.</p>
</body>
</html>
"""
