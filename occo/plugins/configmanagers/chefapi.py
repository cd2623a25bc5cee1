"""A small client of the Chef Infra Server API: signed requests on ``requests`` + ``cryptography``.

Every request is signed with the client's RSA key by the Chef protocol (``X-Ops-Sign``):

* version 1.3 (the default): the canonical request names the method, the path, the SHA-256 of
  the body, the signing version, the time, the client and the server API version; it is signed
  with RSASSA-PKCS1-v1_5 over SHA-256.  Chef Infra Server 12.4+ and goiardi 0.11 accept it;
* version 1.0 (``sign_version: '1.0'`` in the auth data, for older servers): the canonical
  request carries the SHA-1 of the path and of the body, and is "encrypted" with the private
  key: PKCS#1 v1.5 type-1 padding of the canonical text itself, without a digest prefix.

The signature goes in ``X-Ops-Authorization-1..N`` headers of 60 characters each.  Every
request has a time-out; the client never retries (the engine does, see :mod:`occo.calls`), it
raises :class:`ChefHTTPError` for an answer that is not 2xx and :class:`ChefUnreachable` when
no answer came.  Answers are read up to :data:`MAX_ANSWER` bytes and must be JSON.
"""
from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple
from urllib.parse import urlsplit

from occo.plugins.http import AnswerTooLong, never_sent, read_bounded, session

SIGN_VERSIONS = ('1.3', '1.0')
DEFAULT_SIGN_VERSION = '1.3'
SERVER_API_VERSION = '1'
CHEF_VERSION = '17.0.0'  # X-Chef-Version: the client protocol we speak
MAX_ANSWER = 4 * 1024 * 1024  # bytes: a longer answer is refused, not read
SEGMENT = 60  # characters of the signature per X-Ops-Authorization-N header
KEY_HINT = ('client_key must be the PEM text of the key; write '
            '`client_key: !text_import {url: file://key.pem}`')


class ChefKeyError(ValueError):
    """The client key is not a usable RSA private key in PEM (the message never shows it)."""


class ChefUnreachable(Exception):
    """No answer came: ``unsent`` if the request surely never reached the server."""

    def __init__(self, message: str, unsent: bool) -> None:
        super().__init__(message)
        self.unsent = unsent


class ChefHTTPError(Exception):
    """The server answered with a status that is not 2xx; ``said`` is its message, cleaned."""

    def __init__(self, status: int, said: str) -> None:
        super().__init__(f'{said} (HTTP {status})')
        self.status = status
        self.said = said


class ChefAnswerError(Exception):
    """The server answered 2xx with something that is not what the API promises."""


def load_key(pem: Any) -> Any:
    """The RSA private key of ``pem`` (its text).

    :raises ChefKeyError: if it is not PEM text of an RSA private key (a file name, garbage, an
        encrypted key); the message names the problem, never the value.
    """
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import load_pem_private_key
    if not isinstance(pem, str) or '-----BEGIN' not in pem:
        raise ChefKeyError(KEY_HINT)
    try:
        key = load_pem_private_key(pem.strip().encode(), password=None)
    except (ValueError, TypeError):
        raise ChefKeyError('client_key is not a readable unencrypted PEM private key '
                           f'({KEY_HINT})') from None
    except Exception:  # noqa: BLE001 - the backend's own errors: never show the key
        raise ChefKeyError(f'client_key cannot be read ({KEY_HINT})') from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ChefKeyError('client_key must be an RSA private key (Chef signs with RSA)')
    return key


def canonical_path(path: str) -> str:
    """The path as signed: repeated slashes squeezed, no trailing slash."""
    squeezed = re.sub('/+', '/', path)
    return squeezed[:-1] if len(squeezed) > 1 and squeezed.endswith('/') else squeezed


def _b64_digest(name: str, data: bytes) -> str:
    return base64.b64encode(hashlib.new(name, data).digest()).decode()


def _private_encrypt(key: Any, data: bytes) -> bytes:
    """RSA "private encrypt" (OpenSSL's ``RSA_private_encrypt`` with PKCS#1 v1.5 padding):
    type-1 padding of ``data`` itself, raised to the private exponent."""
    numbers = key.private_numbers()
    n, d = numbers.public_numbers.n, numbers.d
    size = (n.bit_length() + 7) // 8
    if len(data) > size - 11:
        raise ChefKeyError('client_key is too short to sign a request (use a key of 2048 bits)')
    block = b'\x00\x01' + b'\xff' * (size - 3 - len(data)) + b'\x00' + data
    return pow(int.from_bytes(block, 'big'), d, n).to_bytes(size, 'big')


@dataclass(frozen=True)
class Signer:
    """Signs requests as ``client_name`` with ``key`` by protocol ``version``."""

    client_name: str
    key: Any = field(repr=False)
    version: str = DEFAULT_SIGN_VERSION

    def canonical(self, method: str, path: str, body: bytes, timestamp: str) -> str:
        path = canonical_path(path)
        if self.version == '1.3':
            return '\n'.join((f'Method:{method.upper()}', f'Path:{path}',
                              f'X-Ops-Content-Hash:{_b64_digest("sha256", body)}',
                              'X-Ops-Sign:version=1.3', f'X-Ops-Timestamp:{timestamp}',
                              f'X-Ops-UserId:{self.client_name}',
                              f'X-Ops-Server-API-Version:{SERVER_API_VERSION}'))
        return '\n'.join((f'Method:{method.upper()}',
                          f'Hashed Path:{_b64_digest("sha1", path.encode())}',
                          f'X-Ops-Content-Hash:{_b64_digest("sha1", body)}',
                          f'X-Ops-Timestamp:{timestamp}', f'X-Ops-UserId:{self.client_name}'))

    def headers(self, method: str, path: str, body: bytes,
                timestamp: Optional[str] = None) -> Dict[str, str]:
        """The authentication headers of one request."""
        timestamp = timestamp or time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())
        text = self.canonical(method, path, body, timestamp).encode()
        if self.version == '1.3':
            from cryptography.hazmat.primitives import hashes
            from cryptography.hazmat.primitives.asymmetric import padding
            signature = self.key.sign(text, padding.PKCS1v15(), hashes.SHA256())
            algorithm, content = 'sha256', _b64_digest('sha256', body)
        else:
            signature = _private_encrypt(self.key, text)
            algorithm, content = 'sha1', _b64_digest('sha1', body)
        encoded = base64.b64encode(signature).decode()
        headers = {'X-Ops-Sign': f'algorithm={algorithm};version={self.version};',
                   'X-Ops-Userid': self.client_name, 'X-Ops-Timestamp': timestamp,
                   'X-Ops-Content-Hash': content,
                   'X-Ops-Server-API-Version': SERVER_API_VERSION}
        for number, start in enumerate(range(0, len(encoded), SEGMENT), 1):
            headers[f'X-Ops-Authorization-{number}'] = encoded[start:start + SEGMENT]
        return headers


def said_of(status: int, text: str) -> str:
    """What the server said, on one line and short: Chef's ``{"error": [...]}`` messages, or
    the beginning of the text."""
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    message: Any = None
    if isinstance(data, dict):
        message = data.get('error') or data.get('message') or data.get('error_messages')
        if isinstance(message, list):
            message = '; '.join(str(m) for m in message[:5])
    if not message:
        message = text.strip() or 'an empty answer'
    message = ' '.join(str(message).split())
    return message if len(message) <= 300 else message[:297] + '...'


class ChefClient:
    """The API of one Chef server (or organisation) for one client: ``endpoint`` is the
    server URL, with or without ``/organizations/<org>`` and a trailing slash."""

    def __init__(self, endpoint: str, signer: Signer, timeout: float) -> None:
        self.base = endpoint.rstrip('/')
        parts = urlsplit(self.base)
        if parts.scheme not in ('http', 'https') or not parts.netloc:
            raise ValueError('endpoint must be an http:// or https:// URL of the Chef server')
        self.signer = signer
        self.timeout = (min(5.0, timeout), timeout)
        self.session = session('application/json')

    def request(self, method: str, path: str, body: Any = None,
                timeout: Optional[float] = None) -> Any:
        """``method`` on ``path`` (relative to the endpoint, e.g. ``nodes/x``); the decoded
        JSON answer.

        :raises ChefHTTPError: for a status that is not 2xx.
        :raises ChefUnreachable: if no answer came in time.
        :raises ChefAnswerError: if the answer is too long or not JSON.
        """
        import requests
        url = f'{self.base}/{path}'
        data = b'' if body is None else json.dumps(body, separators=(',', ':')).encode()
        headers = {'Accept': 'application/json', 'X-Chef-Version': CHEF_VERSION,
                   **self.signer.headers(method, urlsplit(url).path, data)}
        if body is not None:
            headers['Content-Type'] = 'application/json'
        limit: Tuple[float, float] = (self.timeout if timeout is None
                                      else (min(5.0, timeout), timeout))
        try:
            with self.session.request(method, url, data=data or None, headers=headers,
                                      timeout=limit, stream=True, allow_redirects=False) as answer:
                text = _read(answer, limit[1])
                status = answer.status_code
        except requests.exceptions.ConnectTimeout:
            raise ChefUnreachable('no connection within the time-out', unsent=True) from None
        except requests.exceptions.Timeout:
            raise ChefUnreachable('no answer within the time-out', unsent=False) from None
        except requests.exceptions.ConnectionError as exc:
            unsent = never_sent(exc)
            raise ChefUnreachable('cannot connect' if unsent else 'the connection broke',
                                  unsent=unsent) from None
        except requests.exceptions.RequestException as exc:
            raise ChefUnreachable(f'the request failed ({type(exc).__name__})',
                                  unsent=False) from None
        if not 200 <= status < 300:
            raise ChefHTTPError(status, said_of(status, text))
        if not text.strip():
            return None
        try:
            return json.loads(text)
        except ValueError:
            raise ChefAnswerError(f'the answer is not JSON: {said_of(status, text)}') from None


def _read(answer: Any, seconds: float) -> str:
    """The text of an answer: at most :data:`MAX_ANSWER` bytes, arriving within ``seconds``
    in all (a server that trickles must not hold the caller past its time-out)."""
    try:
        return read_bounded(answer, MAX_ANSWER, seconds).decode('utf-8', errors='replace')
    except AnswerTooLong as exc:
        raise ChefAnswerError(str(exc)) from None
