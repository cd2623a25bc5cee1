"""A simulated cloud for tests, benchmarks and demonstrations.

Its "cloud" is the Redis hash ``<prefix>dummycloud`` (field: resource id, value: JSON with
``state``, ``infra_id``, ``node_id``, ...), kept apart from Occopus' own records so that a test
or a person can see leaked resources from another process, and fail a resource by setting its
``state`` to ``failed``.  Resource keys: ``boot_time`` (seconds from create to running, default
0), ``create_time`` (seconds the create call blocks, default 0), ``fail_rate`` (probability
that an instance ends ``failed`` instead of running, default 0).  Addresses are fake
(198.18.0.0/15, the benchmarking range) and must never be contacted.
"""
from __future__ import annotations

import json
import random
import time
import uuid
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

from occo.plugins.resources.base import (
    FAILED, PENDING, RUNNING, SHUTDOWN, CreateRequest, Created, ResourceHandler, ResourceStatus,
    find_in_registry, resource_keys)
from occo.schema import Problem, expect_number
from occo.store import dummycloud_key

# Turn a booted resource from pending to its final state, unless someone changed it meanwhile.
_SETTLE = """
for i, id in ipairs(ARGV) do
  if i % 2 == 1 then
    local current = redis.call('HGET', KEYS[1], id)
    if current then
      local record = cjson.decode(current)
      if record['state'] == 'pending' then
        record['state'] = ARGV[i + 1]
        redis.call('HSET', KEYS[1], id, cjson.encode(record))
      end
    end
  end
end
return 0
"""


def _fake_address(resource_id: str, network: int) -> str:
    value = uuid.UUID(resource_id[-32:]).int
    return f'198.{18 + network}.{(value >> 8) % 256}.{value % 254 + 1}'


class DummyHandler(ResourceHandler):
    type = 'dummy'
    contexts = ('cloudinit', 'docker', 'basic')
    buildable = True
    fake_addresses = True
    keys = resource_keys(optional=('boot_time', 'create_time', 'fail_rate', 'name'))

    @classmethod
    def validate(cls, section: Mapping[str, Any]) -> Iterable[Optional[Problem]]:
        yield from super().validate(section)
        yield expect_number(section, 'boot_time')
        yield expect_number(section, 'create_time')
        yield expect_number(section, 'fail_rate', maximum=1)

    def __init__(self, ctx: Any) -> None:
        super().__init__(ctx)
        self.key = dummycloud_key(ctx.prefix)
        self._settle = ctx.redis.register_script(_SETTLE)

    def create(self, request: CreateRequest) -> Created:
        resource = request.resource
        if resource.get('create_time'):
            time.sleep(float(resource['create_time']))
        resource_id = f'dummy-{uuid.uuid4().hex}'
        addresses = [_fake_address(resource_id, 0)]
        private = _fake_address(resource_id, 1)
        now = time.time()
        boot_time = float(resource.get('boot_time') or 0)
        final = FAILED if random.random() < float(resource.get('fail_rate') or 0) else RUNNING
        record = {
            'state': final if boot_time <= 0 else PENDING, 'infra_id': request.infra_id,
            'node_id': request.node_id, 'node': request.node, 'created_at': round(now, 3),
            'running_at': round(now + boot_time, 3), 'final_state': final,
            'addresses': addresses, 'private_address': private,
        }
        self.ctx.redis.hset(self.key, resource_id, json.dumps(record))
        return Created(resource_id, addresses, private)

    def states(self, records: Sequence[Mapping[str, Any]]) -> Dict[str, ResourceStatus]:
        ids = [r['instance_id'] for r in records]
        values = self.ctx.redis.hmget(self.key, ids) if ids else []
        now = time.time()
        result, settled = {}, []
        for record, value in zip(records, values):
            if value is None:
                result[record['node_id']] = ResourceStatus(
                    SHUTDOWN, reason=f"the dummy cloud has no resource {record['instance_id']}")
                continue
            resource = json.loads(value)
            state = resource.get('state')
            if state == PENDING and now >= resource.get('running_at', 0):
                state = resource.get('final_state', RUNNING)
                settled += [record['instance_id'], state]
            if state == FAILED:
                reason = ('the dummy cloud reports the resource failed'
                          + (' (fail_rate)' if resource.get('final_state') == FAILED else ''))
            else:
                reason = None
            result[record['node_id']] = ResourceStatus(
                state if state in (PENDING, RUNNING, FAILED) else SHUTDOWN,
                resource.get('addresses', []), resource.get('private_address'), reason)
        if settled:
            self._settle(keys=[self.key], args=settled)
        return result

    def drop(self, record: Mapping[str, Any]) -> None:
        if record.get('instance_id'):
            self.ctx.redis.hdel(self.key, record['instance_id'])

    def find(self, infra_id: str) -> List[Dict[str, Any]]:
        return find_in_registry(self.ctx.redis, self.key, infra_id)
