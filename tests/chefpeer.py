"""A small fake Chef Infra Server with organisations, checking X-Ops-Sign 1.3 (and 1.0) signatures.

Only what Occopus' ``chef`` config manager uses: environments, roles and nodes under
``/organizations/<org>/`` (a path without the prefix, or another organisation, is a 404 as on
a real server), each request authenticated by its signed headers against the public keys of
the known clients (a wrong key, a changed body or an old timestamp is a 401 with Chef's
``{"error": [...]}``).  A node "checks in" -- gets ``automatic.ohai_time``, as chef-client's
first run would set it -- the first time it is read at least :attr:`ChefPeer.checkin_after`
seconds after it was made, unless its environment is in :attr:`ChefPeer.no_checkin`.

Tests use the object itself (it runs in their process): :attr:`calls` records every request in
order, :meth:`script` makes chosen requests answer something else (a 503, garbage, a huge
body), and :meth:`objects` shows what the server holds.

Run standalone (``python tests/chefpeer.py [--port N] [--key-out client.pem]``) to try
Occopus against it: it prints its endpoint and writes the key of client ``occopus``.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import json
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, List, Optional, Set, Tuple, Union
from urllib.parse import unquote, urlsplit

ORG = 'occo'
CLIENT = 'chefuser'
SLEW = 900  # seconds a timestamp may be off
KINDS = ('environments', 'roles', 'nodes')
Answer = Tuple[int, Union[bytes, str], str]  # status, body, content type


def new_key() -> Any:
    from cryptography.hazmat.primitives.asymmetric import rsa
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem_of(key: Any) -> str:
    from cryptography.hazmat.primitives import serialization
    return key.private_bytes(serialization.Encoding.PEM,
                             serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption()).decode()


def _b64(name: str, data: bytes) -> str:
    return base64.b64encode(hashlib.new(name, data).digest()).decode()


@dataclass
class Rule:
    """Answer requests matching ``method`` and ``pattern`` (a regex on the path after the
    organisation) with ``answer`` (or what ``answer(request)`` returns), ``times`` times."""

    method: str
    pattern: str
    answer: Union[Answer, Callable[[str], Answer]]
    times: Optional[int] = None


@dataclass
class Call:
    method: str
    path: str           # after /organizations/<org>/
    status: int
    body: Any = None
    sign_version: str = ''


@dataclass
class ChefPeer:
    """The server: its URL (with the organisation), its clients' keys, objects and knobs."""

    org: str = ORG
    port: int = 0
    checkin_after: float = 0.3
    no_checkin: Set[str] = field(default_factory=set)
    calls: List[Call] = field(default_factory=list)
    keys: Dict[str, Any] = field(default_factory=dict)  # client name -> public key

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        self.client_key = new_key()
        self.keys[CLIENT] = self.client_key.public_key()
        self.store: Dict[str, Dict[str, Dict[str, Any]]] = {kind: {} for kind in KINDS}
        self.made: Dict[str, float] = {}
        self.rules: List[Rule] = []
        self.server: Optional[ThreadingHTTPServer] = None

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> 'ChefPeer':
        peer = self

        class Handler(_Handler):
            pass
        Handler.peer = peer
        self.server = _Server(('127.0.0.1', self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, name='chefpeer', daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    @property
    def base(self) -> str:
        assert self.server is not None
        return f'http://127.0.0.1:{self.server.server_address[1]}'

    @property
    def url(self) -> str:
        """The endpoint to give Occopus: the server URL with the organisation."""
        return f'{self.base}/organizations/{self.org}'

    @property
    def client_pem(self) -> str:
        return pem_of(self.client_key)

    # -- knobs and views ---------------------------------------------------------------------

    def script(self, method: str, pattern: str, answer: Union[Answer, Callable[[str], Answer]],
               times: Optional[int] = None) -> Rule:
        rule = Rule(method, pattern, answer, times)
        with self.lock:
            self.rules.append(rule)
        return rule

    def unscript(self, rule: Rule) -> None:
        with self.lock:
            if rule in self.rules:
                self.rules.remove(rule)

    def objects(self, kind: str, prefix: str = '') -> Dict[str, Dict[str, Any]]:
        """Copies of the objects of ``kind`` whose names start with ``prefix``."""
        with self.lock:
            return {k: json.loads(json.dumps(v)) for k, v in self.store[kind].items()
                    if k.startswith(prefix)}

    def nodes_in(self, environment: str) -> Dict[str, Dict[str, Any]]:
        with self.lock:
            return {k: json.loads(json.dumps(v)) for k, v in self.store['nodes'].items()
                    if v.get('chef_environment') == environment}

    def calls_about(self, infra_id: str) -> List[Call]:
        """The requests that concern ``infra_id``: by path, or by the body's name or
        environment."""
        with self.lock:
            calls = list(self.calls)
        return [c for c in calls if infra_id in c.path or isinstance(c.body, dict) and (
            infra_id in str(c.body.get('name')) or c.body.get('chef_environment') == infra_id)]

    # -- serving -----------------------------------------------------------------------------

    def scripted(self, method: str, path: str) -> Optional[Answer]:
        with self.lock:
            for rule in self.rules:
                if rule.method == method and re.search(rule.pattern, path):
                    if rule.times is not None:
                        rule.times -= 1
                        if rule.times <= 0:
                            self.rules.remove(rule)
                    answer = rule.answer
                    break
            else:
                return None
        return answer(path) if callable(answer) else answer

    def authenticate(self, method: str, path: str, headers: Any,
                     body: bytes) -> Tuple[Optional[str], str]:
        """None if the signed headers are right, else why not; and the signing version."""
        sign = headers.get('X-Ops-Sign') or ''
        version = (re.search(r'version=(\d\.\d)', sign) or [None, ''])[1]
        user = headers.get('X-Ops-Userid') or ''
        stamp = headers.get('X-Ops-Timestamp') or ''
        if version not in ('1.0', '1.3'):
            return f"unsupported X-Ops-Sign '{sign}'", version
        if user not in self.keys:
            return (f"Failed to authenticate as '{user}'. Ensure that your node_name and client "
                    'key are correct.', version)
        try:
            when = datetime.strptime(stamp, '%Y-%m-%dT%H:%M:%SZ').replace(tzinfo=timezone.utc)
        except ValueError:
            return 'bad X-Ops-Timestamp', version
        if abs(time.time() - when.timestamp()) > SLEW:
            return 'Authentication failed. Please check your system\'s clock.', version
        digest = 'sha256' if version == '1.3' else 'sha1'
        if headers.get('X-Ops-Content-Hash') != _b64(digest, body):
            return 'Content hash did not match hash of request body', version
        parts, number = [], 1
        while headers.get(f'X-Ops-Authorization-{number}') is not None:
            parts.append(headers[f'X-Ops-Authorization-{number}'])
            number += 1
        try:
            signature = base64.b64decode(''.join(parts), validate=True)
        except ValueError:
            return 'malformed X-Ops-Authorization headers', version
        canonical_path = re.sub('/+', '/', path).rstrip('/') or '/'
        public = self.keys[user]
        if version == '1.3':
            text = '\n'.join((f'Method:{method}', f'Path:{canonical_path}',
                              f'X-Ops-Content-Hash:{_b64("sha256", body)}',
                              'X-Ops-Sign:version=1.3', f'X-Ops-Timestamp:{stamp}',
                              f'X-Ops-UserId:{user}',
                              'X-Ops-Server-API-Version:'
                              f"{headers.get('X-Ops-Server-API-Version')}"))
            from cryptography.exceptions import InvalidSignature
            from cryptography.hazmat.primitives import hashes
            from cryptography.hazmat.primitives.asymmetric import padding
            try:
                public.verify(signature, text.encode(), padding.PKCS1v15(), hashes.SHA256())
            except InvalidSignature:
                return f"Invalid signature for user or client '{user}'", version
            return None, version
        text = '\n'.join((f'Method:{method}',
                          f'Hashed Path:{_b64("sha1", canonical_path.encode())}',
                          f'X-Ops-Content-Hash:{_b64("sha1", body)}', f'X-Ops-Timestamp:{stamp}',
                          f'X-Ops-UserId:{user}'))
        numbers = public.public_numbers()
        size = (numbers.n.bit_length() + 7) // 8
        block = pow(int.from_bytes(signature, 'big'), numbers.e, numbers.n).to_bytes(size, 'big')
        if not block.startswith(b'\x00\x01') or block.split(b'\x00', 2)[-1] != text.encode():
            return f"Invalid signature for user or client '{user}'", version
        return None, version

    def handle(self, method: str, path: str, body: Any) -> Tuple[int, Any]:
        parts = [unquote(p) for p in path.strip('/').split('/')]
        kind = parts[0] if parts else ''
        if kind not in KINDS or len(parts) > 3:
            return 404, {'error': ['not found']}
        with self.lock:
            objects = self.store[kind]
            if len(parts) == 1:
                if method == 'GET':
                    return 200, {k: f'{self.url}/{kind}/{k}' for k in objects}
                if method == 'POST':
                    if not isinstance(body, dict) or not isinstance(body.get('name'), str):
                        return 400, {'error': ['Field \'name\' missing']}
                    if body['name'] in objects:
                        return 409, {'error': [f'{kind[:-1]} already exists']}
                    objects[body['name']] = body
                    self.made[f'{kind}/{body["name"]}'] = time.monotonic()
                    return 201, {'uri': f'{self.url}/{kind}/{body["name"]}'}
                return 405, {'error': ['method not allowed']}
            name = parts[1]
            if len(parts) == 3:
                if kind != 'environments' or parts[2] != 'nodes' or method != 'GET':
                    return 404, {'error': ['not found']}
                if name not in objects:
                    return 404, {'error': [f"Cannot load environment {name}"]}
                return 200, {k: f'{self.url}/nodes/{k}' for k, v in self.store['nodes'].items()
                             if v.get('chef_environment') == name}
            if name not in objects:
                return 404, {'error': [f"Cannot load {kind[:-1]} {name}"]}
            if method == 'GET':
                found = objects[name]
                if kind == 'nodes':
                    self._check_in(found)
                return 200, found
            if method == 'PUT':
                if not isinstance(body, dict):
                    return 400, {'error': ['bad body']}
                objects[name] = dict(body, name=name)
                return 200, objects[name]
            if method == 'DELETE':
                self.made.pop(f'{kind}/{name}', None)
                return 200, objects.pop(name)
            return 405, {'error': ['method not allowed']}

    def _check_in(self, node: Dict[str, Any]) -> None:
        """chef-client's first run, simulated: ``automatic.ohai_time`` once the node is old
        enough, unless its environment is in :attr:`no_checkin`."""
        made = self.made.get(f'nodes/{node.get("name")}', time.monotonic())
        if node.get('chef_environment') in self.no_checkin or \
                time.monotonic() - made < self.checkin_after:
            return
        automatic = node.setdefault('automatic', {})
        if isinstance(automatic, dict):
            automatic.setdefault('ohai_time', time.time())
            automatic.setdefault('fqdn', f'{node.get("name")}.example.invalid')


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hung up (a huge answer it refused to read): nothing to tell


class _Handler(BaseHTTPRequestHandler):
    peer: ChefPeer
    protocol_version = 'HTTP/1.1'

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _serve(self) -> None:
        peer = self.peer
        length = int(self.headers.get('Content-Length') or 0)
        raw = self.rfile.read(length) if length else b''
        path = urlsplit(self.path).path
        prefix = f'/organizations/{peer.org}/'
        inner = path[len(prefix):] if path.startswith(prefix) else None
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw.decode(errors='replace')
        if inner is None:
            return self._answer(404, {'error': ['not found: the organisation is missing']},
                                path, body)
        scripted = peer.scripted(self.command, inner)
        if scripted is not None:
            status, text, kind = scripted
            return self._raw(status, text.encode() if isinstance(text, str) else text, kind,
                             inner, body)
        why, version = peer.authenticate(self.command, path, self.headers, raw)
        if why is not None:
            return self._answer(401, {'error': [why]}, inner, body, version)
        status, answer = peer.handle(self.command, inner, body)
        self._answer(status, answer, inner, body, version)

    def _answer(self, status: int, data: Any, path: str, body: Any, version: str = '') -> None:
        self._raw(status, json.dumps(data).encode(), 'application/json', path, body, version)

    def _raw(self, status: int, data: bytes, kind: str, path: str, body: Any,
             version: str = '') -> None:
        with self.peer.lock:
            self.peer.calls.append(Call(self.command, path, status, body, version))
        self.send_response(status)
        self.send_header('Content-Type', kind)
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = _serve


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--port', type=int, default=0)
    parser.add_argument('--org', default=ORG)
    parser.add_argument('--key-out', default='client.pem', help='where to write the client key')
    args = parser.parse_args(argv)
    with ChefPeer(org=args.org, port=args.port) as peer:
        with open(args.key_out, 'w') as out:
            out.write(peer.client_pem)
        print(f'endpoint: {peer.url}\nclient_name: {CLIENT}\nclient_key: {args.key_out}',
              flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            return 0


if __name__ == '__main__':
    sys.exit(main())
