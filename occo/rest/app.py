"""The REST API: a thin FastAPI face over :class:`occo.api.Occopus` and the background
:class:`~occo.rest.service.Service`.  Paths, methods and bodies are the original's (reference
§17); errors use real status codes with the original's ``status_code``/``reason``/``message``
fields.
"""
from __future__ import annotations

import hmac
import json
from typing import Any, Dict, List, Optional

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from occo.api import check_infra_id
from occo.errors import (Conflict, LeaseHeld, OccoError, StoreError, UnknownInfrastructure,
                         UnknownNode, describe_error)
from occo.redact import mask_known, mask_urls, printable
from occo.rest.page import add_status_page, viewer
from occo.rest.service import BAD_INPUT, Busy, Service

#: bytes a request body may hold unless configured
MAX_BODY = 1 << 20


class Error(BaseModel):
    status_code: int
    reason: str
    message: str


class InfraId(BaseModel):
    infraid: str


class InfraList(BaseModel):
    infrastructures: List[str]


class Scaled(BaseModel):
    method: str
    infraid: str
    nodename: str
    count: int


class ScaledDown(BaseModel):
    method: str
    infraid: str
    nodename: str
    nodeid: Optional[str] = Field(description='the instance asked for, or null for the youngest')


class Scaling(BaseModel):
    actual: int
    target: int
    min: int
    max: int


class InstanceState(BaseModel):
    resource_address: Any = Field(description='an address, or a list of addresses')
    state: str
    implementation: Optional[str] = Field(
        None, description='which of several candidate implementations it runs on')


class ImplementationState(BaseModel):
    index: int
    implementation: str
    state: str = Field(description='closed, open or half-open')
    until: Optional[float] = Field(None, description='open until then (epoch seconds)')
    failures: Optional[int] = Field(None, description='creates failed in a row')
    reason: Optional[str] = None


class NodeReport(BaseModel):
    instances: Dict[str, InstanceState]
    scaling: Scaling
    implementations: Optional[List[ImplementationState]] = Field(
        None, description='the health of each candidate, for a node that has several')


class Events(BaseModel):
    infraid: str
    events: List[Dict[str, Any]]


class Health(BaseModel):
    status: str
    redis: str


class ApiError(Exception):
    """An error answer: ``status`` with the original's body fields."""

    def __init__(self, status: int, reason: str, message: str = '') -> None:
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message


def _answer(status: int, reason: str, message: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={
        'status_code': status, 'reason': reason,
        'message': mask_known(mask_urls(printable(message)))[:2000]})


def _status_of(exc: OccoError) -> tuple:
    if isinstance(exc, (UnknownInfrastructure, UnknownNode)):
        return 404, 'Not Found'
    if isinstance(exc, BAD_INPUT):
        return 400, 'Bad Request'
    if isinstance(exc, (Conflict, LeaseHeld)):
        return 409, 'Conflict'
    if isinstance(exc, (StoreError, Busy)):
        return 503, 'Service Unavailable'
    return 500, 'Internal Server Error'


ERRORS = {status: {'model': Error} for status in (400, 401, 404, 409, 410, 413, 500, 503)}

#: the request body of ``POST /infrastructures/``: an infrastructure description, in YAML or JSON
_DESCRIPTION = {
    'type': 'object', 'required': ['infra_name', 'nodes'], 'additionalProperties': True,
    'properties': {
        'infra_name': {'type': 'string'}, 'user_id': {'type': 'string'},
        'nodes': {'type': 'array', 'items': {
            'type': 'object', 'required': ['name', 'type'], 'additionalProperties': True,
            'properties': {'name': {'type': 'string'}, 'type': {'type': 'string'},
                           'scaling': {'type': 'object', 'properties': {
                               'min': {'type': 'integer'}, 'max': {'type': 'integer'}}},
                           'variables': {'type': 'object'}}}},
        'dependencies': {'type': 'array', 'items': {'type': 'array', 'items': {'type': 'string'}}},
        'variables': {'type': 'object'}}}
CREATE_BODY = {'requestBody': {'required': True, 'description': 'An infrastructure description '
                               '(the YAML of occopus-build, or the same as JSON).', 'content': {
    'application/x-yaml': {'schema': _DESCRIPTION}, 'application/json': {'schema': _DESCRIPTION},
    'text/plain': {'schema': {'type': 'string'}}}}}
NOTIFY_BODY = {'requestBody': {'required': True, 'content': {'application/json': {'schema': {
    'type': 'object', 'required': ['type'], 'additionalProperties': True,
    'properties': {'type': {'type': 'string'}}}}}}}


def create_app(service: Service, *, token: Optional[str] = None, max_body: int = MAX_BODY,
               cors_origins: Optional[List[str]] = None) -> FastAPI:
    """The application; ``token`` (if given) is required as ``Authorization: Bearer <token>``
    on every endpoint but ``/health``."""
    session = service.session
    app = FastAPI(title='Occopus REST API', version='1.0', openapi_url=None, docs_url=None,
                  redoc_url=None, description='Build, maintain, scale and destroy infrastructures.')
    if cors_origins:
        from fastapi.middleware.cors import CORSMiddleware
        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins),
                           allow_methods=['GET', 'POST', 'DELETE'], allow_headers=['Authorization'])

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _answer(exc.status, exc.reason, exc.message)

    @app.exception_handler(OccoError)
    async def occo_error(request: Request, exc: OccoError) -> JSONResponse:
        status, reason = _status_of(exc)
        if isinstance(exc, UnknownInfrastructure):  # said in the API's words, not the CLI's
            return _answer(status, reason, f'Unknown infrastructure: "{exc.infra_id}" '
                                           '(GET /infrastructures/ lists the known ones)')
        return _answer(status, reason, describe_error(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = '; '.join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}"
                             for e in exc.errors()[:5])
        return _answer(400, 'Bad Request', problems or 'invalid request')

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _answer(exc.status_code, str(exc.detail), str(exc.detail))

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        return _answer(500, 'Internal Server Error', f'{type(exc).__name__}: the service failed '
                       'to answer; its log says more')

    def authorised(request: Request) -> None:
        if token is None or viewer(request, token):  # the status page's cookie reads only
            return
        given = request.headers.get('authorization', '')
        scheme, _, value = given.partition(' ')
        if scheme.lower() != 'bearer' or not hmac.compare_digest(value.strip().encode(), token.encode()):
            raise ApiError(401, 'Unauthorized', 'a valid "Authorization: Bearer <token>" header '
                           'is needed (the token of the rest section of the configuration, or '
                           'OCCOPUS_REST_TOKEN)')

    def strict(request: Request) -> None:
        """A query parameter the endpoint does not take is a mistake to say, not to ignore."""
        route = request.scope.get('route')
        dependant = getattr(route, 'dependant', None)
        taken = _query_names(dependant) if dependant is not None else set()
        unknown = sorted(set(request.query_params) - taken)
        if unknown:
            raise ApiError(400, 'Bad Request', f"unknown query parameter(s): {', '.join(unknown)[:200]}"
                           + (f" (this endpoint takes {', '.join(sorted(taken))})" if taken else ''))

    guarded = [Depends(authorised), Depends(strict)]

    add_status_page(app, session, token)

    generated = app.openapi

    def described() -> Dict[str, Any]:
        """The generated description less FastAPI's 422 answers: a request that fails
        validation is answered 400 (above), so 422 is never sent."""
        if app.openapi_schema is None:
            spec = generated()
            for item in spec.get('paths', {}).values():
                for operation in item.values():
                    operation.get('responses', {}).pop('422', None)
            for name in ('HTTPValidationError', 'ValidationError'):
                spec.get('components', {}).get('schemas', {}).pop(name, None)
        return app.openapi_schema

    app.openapi = described  # type: ignore[method-assign]

    @app.get('/openapi.json', include_in_schema=False, dependencies=guarded)
    def openapi() -> Dict[str, Any]:
        return app.openapi()

    async def body_text(request: Request) -> str:
        declared = request.headers.get('content-length')
        if declared is not None and declared.isdigit() and int(declared) > max_body:
            raise ApiError(413, 'Payload Too Large', f'the body may hold at most {max_body} bytes')
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body:
                raise ApiError(413, 'Payload Too Large', f'the body may hold at most {max_body} bytes')
            chunks.append(chunk)
        try:
            return b''.join(chunks).decode('utf-8')
        except UnicodeDecodeError:
            raise ApiError(400, 'Bad Request', 'the body must be UTF-8 text (YAML or JSON)') from None

    def known(infra_id: str) -> Dict[str, Any]:
        """The stored record of an infrastructure (404 otherwise; 410 for a failed background
        build, with its reason)."""
        record = session.store.infra(infra_id) if _valid_id(infra_id) else None
        if record is None:
            outcome = session.store.outcome(infra_id) if _valid_id(infra_id) else None
            if outcome is not None:
                raise ApiError(410, 'Gone', f"the build failed and was rolled back: {outcome.get('reason')}")
            raise UnknownInfrastructure(infra_id)
        return record

    @app.get('/health', response_model=Health)
    def health() -> Dict[str, str]:
        """Liveness: answers without a token; ``redis`` says whether Redis answers."""
        try:
            session.store.ping()
            return {'status': 'ok', 'redis': 'ok'}
        except OccoError:
            return {'status': 'degraded', 'redis': 'unreachable'}

    @app.post('/infrastructures/', response_model=InfraId, responses=ERRORS, dependencies=guarded,
              openapi_extra=CREATE_BODY)
    async def create(request: Request) -> Dict[str, str]:
        """Create an infrastructure from the YAML (or JSON) description in the body; answers at
        once with its id, and builds it in the background."""
        text = await body_text(request)
        if not text.strip():
            raise ApiError(400, 'Bad Request', 'Empty POST data: send an infrastructure description')
        from starlette.concurrency import run_in_threadpool
        return {'infraid': await run_in_threadpool(service.submit, text)}

    @app.get('/infrastructures/', response_model=InfraList, responses=ERRORS, dependencies=guarded)
    def list_all() -> Dict[str, List[str]]:
        """Every known infrastructure."""
        return {'infrastructures': [i['infra_id'] for i in session.list_infras()]}

    @app.get('/infrastructures/{infraid}', response_model=Dict[str, NodeReport],
             response_model_exclude_unset=True, responses=ERRORS, dependencies=guarded)
    def get(infraid: str, live: bool = False) -> Dict[str, Any]:
        """Its nodes: each instance's state and address, and the scaling counts (``live``:
        ask the clouds and run the health checks now, rather than the last pass's view)."""
        known(infraid)
        return session.report(infraid, live=live)

    @app.delete('/infrastructures/{infraid}', response_model=InfraId, responses=ERRORS,
                dependencies=guarded)
    def delete(infraid: str) -> Dict[str, str]:
        """Destroy it (a build under way is cancelled and rolled back first); answers once
        nothing of it is left."""
        if not _valid_id(infraid):
            raise UnknownInfrastructure(infraid)
        service.delete(infraid)
        return {'infraid': infraid}

    def scaled(infraid: str, node: str, **request: Any) -> None:
        known(infraid)
        session.scale(infraid, node, **request)

    @app.post('/infrastructures/{infraid}/scaleup/{nodename}', response_model=Scaled,
              responses=ERRORS, dependencies=guarded)
    def scaleup(infraid: str, nodename: str) -> Dict[str, Any]:
        """One more instance of a node (applied by the next pass, within its limits)."""
        scaled(infraid, nodename, change=1)
        return {'method': 'scaleup', 'infraid': infraid, 'nodename': nodename, 'count': 1}

    @app.post('/infrastructures/{infraid}/scaleup/{nodename}/{count}', response_model=Scaled,
              responses=ERRORS, dependencies=guarded)
    def scaleup_count(infraid: str, nodename: str, count: int) -> Dict[str, Any]:
        """``count`` more instances of a node."""
        _positive(count)
        scaled(infraid, nodename, change=count)
        return {'method': 'scaleup', 'infraid': infraid, 'nodename': nodename, 'count': count}

    @app.post('/infrastructures/{infraid}/scaledown/{nodename}', response_model=ScaledDown,
              responses=ERRORS, dependencies=guarded)
    def scaledown(infraid: str, nodename: str) -> Dict[str, Any]:
        """One instance fewer (the youngest)."""
        scaled(infraid, nodename, change=-1)
        return {'method': 'scaledown', 'infraid': infraid, 'nodename': nodename, 'nodeid': None}

    @app.post('/infrastructures/{infraid}/scaledown/{nodename}/{nodeid}', response_model=ScaledDown,
              responses=ERRORS, dependencies=guarded)
    def scaledown_one(infraid: str, nodename: str, nodeid: str) -> Dict[str, Any]:
        """Drop the instance ``nodeid`` (its id, or one of its addresses)."""
        scaled(infraid, nodename, selector=nodeid)
        return {'method': 'scaledown', 'infraid': infraid, 'nodename': nodename, 'nodeid': nodeid}

    @app.post('/infrastructures/{infraid}/scaleto/{nodename}/{count}', response_model=Scaled,
              responses=ERRORS, dependencies=guarded)
    def scaleto(infraid: str, nodename: str, count: int) -> Dict[str, Any]:
        """Set the node's target count (clamped to its limits when applied)."""
        if not 0 <= count <= 1_000_000:
            raise ApiError(400, 'Bad Request', 'count must be a whole number from 0 to 1000000')
        scaled(infraid, nodename, target=count)
        return {'method': 'scaleto', 'infraid': infraid, 'nodename': nodename, 'count': count}

    def marking(name: str, mark: Any, doc: str) -> None:
        def marked(infraid: str) -> Dict[str, str]:
            known(infraid)
            mark(infraid)
            return {'infraid': infraid}
        marked.__name__, marked.__doc__ = name, doc
        app.post(f'/infrastructures/{{infraid}}/{name}', response_model=InfraId, responses=ERRORS,
                 dependencies=guarded)(marked)

    marking('attach', session.attach, 'Maintain it in the background (409 if it is already).')
    marking('detach', session.detach,
            'Stop maintaining it in the background; it keeps running (409 if it is not).')

    @app.post('/infrastructures/{infraid}/notify', response_model=InfraId, responses=ERRORS,
              dependencies=guarded, openapi_extra=NOTIFY_BODY)
    async def notify(infraid: str, request: Request) -> Dict[str, str]:
        """Notification settings (a JSON object, e.g. ``{"type": "fcm", ...}``): checked and
        accepted; this release sends no notifications (the events endpoint has them)."""
        text = await body_text(request)
        known(infraid)
        try:
            settings = json.loads(text)
        except (ValueError, RecursionError):
            raise ApiError(400, 'Bad Request', 'the body must be a JSON object (not nested '
                           'deeper than Python can read)') from None
        if not isinstance(settings, dict) or not isinstance(settings.get('type'), str):
            raise ApiError(400, 'Bad Request', 'the body must be a JSON object with a "type"')
        return {'infraid': infraid}

    @app.get('/infrastructures/{infraid}/events', response_model=Events, responses=ERRORS,
             dependencies=guarded)
    def events(infraid: str, count: Optional[int] = None) -> Dict[str, Any]:
        """Its event stream, oldest first (``count``: the latest ones only)."""
        if count is not None and not 1 <= count <= 100000:
            raise ApiError(400, 'Bad Request', 'count must be a whole number from 1 to 100000')
        outcome = session.store.outcome(infraid) if _valid_id(infraid) else None
        if outcome is not None and session.store.infra(infraid) is None:
            # a build that failed in the background: what it said, then why it failed
            told = [{'event': 'build_progress', 'reason': line} for line in outcome.get('lines', [])]
            told.append({'event': 'build_failed', 'reason': outcome.get('reason', ''),
                         'time': outcome.get('failed_at')})
            return {'infraid': infraid, 'events': told[-count:] if count else told}
        known(infraid)
        return {'infraid': infraid, 'events': session.events(infraid, count)}

    return app


def _query_names(dependant: Any) -> set:
    """The query parameters an endpoint takes (its own and its dependencies')."""
    names = {param.alias for param in getattr(dependant, 'query_params', ())}
    for sub in getattr(dependant, 'dependencies', ()):
        names |= _query_names(sub)
    return names


def _valid_id(infra_id: str) -> bool:
    try:
        check_infra_id(infra_id)
        return True
    except OccoError:
        return False


def _positive(count: int) -> None:
    if not 1 <= count <= 10000:
        raise ApiError(400, 'Bad Request', 'count must be a whole number from 1 to 10000')
