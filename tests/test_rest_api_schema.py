"""schemathesis against the running service's ``/openapi.json``: for every operation, cases
generated from the schema (valid and invalid ones, with made-up ids and with the ids of a live
dummy infrastructure) must never be answered 5xx, and every answer must match the schema: its
status code documented, its content type and body as described.

Bounded: a few dozen cases per operation and mode, no deadline per case, no example database,
so the whole run stays well under a minute."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

schemathesis = pytest.importorskip('schemathesis')

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.core.failures import FailureGroup  # noqa: E402
from schemathesis.specs.openapi.checks import (content_type_conformance,  # noqa: E402
                                               negative_data_rejection,
                                               response_schema_conformance,
                                               status_code_conformance)

from conftest import write  # noqa: E402
from peer_rest import states  # noqa: E402
from test_build import import_ok  # noqa: E402

NODES = """\
'node_def:web':
  - resource: {type: dummy, boot_time: 0}
    health_check: {ping: false}
'node_def:db':
  - resource: {type: dummy, boot_time: 0}
    health_check: {ping: false}
'node_def:broken':
  - resource: {type: dummy, fail_rate: 1}
    health_check: {ping: false}
"""
INFRA = """\
infra_name: fuzzed
user_id: someone@example.org
nodes:
  - {name: db, type: db}
  - {name: web, type: web, scaling: {min: 1, max: 3}}
dependencies:
  - [web, db]
"""
#: cases per operation, mode and choice of ids
EXAMPLES = 25
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]


def _run(operation: Any, mode: GenerationMode, base_url: str, fixed: Optional[Dict[str, str]],
         ids: str, failures: List[str]) -> int:
    """Up to EXAMPLES cases of one operation; each failure's first line goes to ``failures``;
    returns how many cases were sent."""
    strategy = operation.as_strategy(generation_mode=mode, path_parameters=fixed or None)
    checks = CHECKS + ([negative_data_rejection] if mode == GenerationMode.NEGATIVE else [])
    sent = [0]

    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def run(case: Any) -> None:
        if mode == GenerationMode.NEGATIVE and any(
                value in ({}, []) for value in (case.query or {}).values()):
            return  # an empty object or list is sent as nothing: the same request as one
            # without that optional parameter, which is valid (no server can reject it)
        sent[0] += 1
        case.call_and_validate(base_url=base_url, checks=checks, timeout=30)

    try:
        run()
    except Unsatisfiable:
        pass  # nothing of this operation can be made invalid (negative mode): nothing to send
    except (Exception, FailureGroup) as exc:  # noqa: BLE001 - every operation is tried; all told at the end
        told = [str(e).strip() for e in getattr(exc, 'exceptions', ())] or [str(exc).strip()]
        failures.append(f'{operation.label} [{mode.value}, {ids}]:\n    '
                        + '\n    '.join(line for text in told for line in text.splitlines()[:8]))
    return sent[0]


def test_every_answer_matches_the_openapi_schema(occo, rest, tmp_path: Path):
    """Three choices of path parameters: made up; those of a live infrastructure (its node
    ``web`` and an instance of it); and the id of one whose background build failed (answered
    410 Gone while its outcome is kept)."""
    import_ok(occo, write(tmp_path, {'nodes.yaml': NODES}) / 'nodes.yaml')
    failed = rest.call('POST', '/infrastructures/', data=INFRA.replace('type: db}', 'type: broken}').encode())
    assert failed.status_code == 200, failed.text
    failed = failed.json()['infraid']
    answer = rest.call('POST', '/infrastructures/', data=INFRA.encode())
    assert answer.status_code == 200, answer.text
    infra = answer.json()['infraid']
    rest.wait_for(infra, lambda b: states(b) == {'db': ['ready'], 'web': ['ready']})
    instance = next(iter(rest.call('GET', f'/infrastructures/{infra}').json()['web']['instances']))
    deadline = time.monotonic() + 30
    while rest.call('GET', f'/infrastructures/{failed}').status_code != 410:
        assert time.monotonic() < deadline, 'the broken build did not fail'
        time.sleep(0.2)

    schema = schemathesis.openapi.from_url(f'{rest.url}/openapi.json')
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 14
    # DELETE of the live infrastructure last: the other operations see it alive
    operations.sort(key=lambda op: op.method.upper() == 'DELETE')
    live = {'infraid': infra, 'nodename': 'web', 'nodeid': instance}
    failures: List[str] = []
    sent = 0
    for operation in operations:
        names = {p.name for p in operation.path_parameters}
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            sent += _run(operation, mode, rest.url, None, 'made-up ids', failures)
        if 'infraid' in names and operation.method.upper() != 'DELETE':
            fixed = {name: live[name] for name in names if name in live}
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                sent += _run(operation, mode, rest.url, fixed, 'live ids', failures)
            sent += _run(operation, GenerationMode.POSITIVE, rest.url, {'infraid': failed},
                         'failed build id', failures)
    # the live infrastructure, deleted last, with the DELETE the schema describes
    deleted = rest.call('DELETE', f'/infrastructures/{infra}')
    assert deleted.status_code in (200, 404), deleted.text
    assert not failures, f'{len(failures)} operation(s) broke the schema:\n' + '\n'.join(failures)
    assert sent > 200  # the cases were really generated and sent
    assert 'Traceback' not in rest.log(), rest.log()[-3000:]
