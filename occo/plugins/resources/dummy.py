"""A simulated cloud for tests, benchmarks and demonstrations.

Its "cloud" is the registry ``dummy`` (the Redis hash ``<prefix>dummycloud``: resource id ->
JSON with ``state``, ``infra_id``, ``node_id``, ...), kept apart from Occopus' own records so
that a test or a person can see leaked resources from another process, and fail a resource by
setting its ``state`` to ``failed``.  Addresses are fake (198.18.0.0/15, the benchmarking
range) and are never contacted.

Knobs (resource keys, all optional), to play a slow or failing cloud:

``create_time``
    seconds the create call blocks before the resource exists (default 0); a create the
    engine stopped waiting for makes nothing;
``boot_time``
    seconds from create to running (default 0);
``drop_time``
    seconds the drop call blocks (default 0);
``fail_rate``
    probability that a resource ends ``failed`` instead of running (default 0);
``throttle_rate``
    probability that any call (create, states, drop) is refused with a transient throttling
    error, which the engine retries (default 0);
``endpoint``
    a made-up endpoint name: calls are limited, and states asked, per endpoint.

``drop_time`` and ``throttle_rate`` are kept with the resource, so a drop obeys the values it
was created with.  Setting a resource's ``state`` to ``failed`` in the registry fails it;
setting it to ``locked`` makes every drop of it fail (a cloud that refuses), until it is set
back.
"""
from __future__ import annotations

import random
import time
import uuid
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

from occo.errors import CloudError, TransientCloudError
from occo.instances import Instance
from occo.plugins.resources.base import (
    FAILED, PENDING, RUNNING, SHUTDOWN, CreateRequest, Created, Found, ResourceHandler,
    ResourceStatus, resource_keys)
from occo.schema import Problem, expect_number


LOCKED = 'locked'  # a state a person can give a resource so that dropping it fails


def _fake_address(resource_id: str, network: int) -> str:
    value = uuid.UUID(resource_id[-32:]).int
    return f'198.{18 + network}.{(value >> 8) % 256}.{value % 254 + 1}'


class DummyHandler(ResourceHandler):
    type = 'dummy'
    contexts = ('cloudinit', 'docker', 'basic')
    buildable = True
    fake_addresses = True
    keys = resource_keys(optional=('boot_time', 'create_time', 'drop_time', 'fail_rate',
                                   'throttle_rate', 'endpoint', 'name'))

    @classmethod
    def validate(cls, section: Mapping[str, Any]) -> Iterable[Optional[Problem]]:
        yield from super().validate(section)
        for key in ('boot_time', 'create_time', 'drop_time'):
            yield expect_number(section, key)
        yield expect_number(section, 'fail_rate', maximum=1)
        yield expect_number(section, 'throttle_rate', maximum=1)

    def __init__(self, ctx: Any) -> None:
        super().__init__(ctx)
        self.cloud = ctx.registry('dummy')

    @staticmethod
    def _throttle(resource: Mapping[str, Any], call: str) -> None:
        if random.random() < float(resource.get('throttle_rate') or 0):
            raise TransientCloudError(f'the dummy cloud throttled the {call} call '
                                      '(throttle_rate; try again later)')

    def create(self, request: CreateRequest) -> Created:
        resource = request.resource
        started = time.time()
        self._throttle(resource, 'create')
        if request.cancelled.wait(float(resource.get('create_time') or 0)):
            raise TransientCloudError('the create call was given up by its caller; nothing made')
        resource_id = f'dummy-{uuid.uuid4().hex}'
        addresses = [_fake_address(resource_id, 0)]
        private = _fake_address(resource_id, 1)
        now = time.time()
        boot_time = float(resource.get('boot_time') or 0)
        final = FAILED if random.random() < float(resource.get('fail_rate') or 0) else RUNNING
        state = final if boot_time <= 0 else PENDING
        self.cloud.put(resource_id, {
            'state': state.value, 'infra_id': request.infra_id, 'node_id': request.node_id,
            'node': request.node, 'endpoint': self.endpoint(resource),
            'call_started': round(started, 3), 'created_at': round(now, 3),
            'running_at': round(now + boot_time, 3), 'final_state': final.value,
            'drop_time': float(resource.get('drop_time') or 0),
            'throttle_rate': float(resource.get('throttle_rate') or 0),
            'addresses': addresses, 'private_address': private})
        return Created(resource_id, addresses, private, state=state)

    def states(self, instances: Sequence[Instance]) -> Dict[str, ResourceStatus]:
        if instances:
            self._throttle(instances[0].resource, 'states')
        values = self.cloud.get_many([i.instance_id for i in instances])
        now = time.time()
        result, settled = {}, {}
        for instance, resource in zip(instances, values):
            if resource is None:
                result[instance.node_id] = ResourceStatus(
                    SHUTDOWN, reason=f'the dummy cloud has no resource {instance.instance_id}')
                continue
            state = resource.get('state')
            if state == PENDING and now >= resource.get('running_at', 0):
                state = resource.get('final_state', RUNNING.value)
                settled[instance.instance_id] = state
            reason = None
            if state == FAILED:
                reason = ('the dummy cloud reports the resource failed'
                          + (' (fail_rate)' if resource.get('final_state') == FAILED else ''))
            known = dict({s.value: s for s in (PENDING, RUNNING, FAILED)}, locked=RUNNING)
            result[instance.node_id] = ResourceStatus(
                known.get(state, SHUTDOWN), resource.get('addresses', []),
                resource.get('private_address'), reason)
        self.cloud.settle(settled, only_from=PENDING.value)
        return result

    def drop(self, instance: Instance) -> None:
        if not instance.instance_id:
            return
        resource = self.cloud.get(instance.instance_id)
        if resource is None:
            return  # gone already
        self._throttle(resource, 'drop')
        if resource.get('state') == LOCKED:
            raise CloudError(f'the dummy cloud refuses to drop {instance.instance_id}: it is '
                             f"{LOCKED} (set its state to anything else to allow it)")
        time.sleep(float(resource.get('drop_time') or 0))
        self.cloud.delete(instance.instance_id)

    def find(self, infra_id: str, resources: Sequence[Mapping[str, Any]]) -> List[Found]:
        return [Found(entry['instance_id'], entry.get('node_id'), entry.get('node'))
                for entry in self.cloud.find(infra_id)]
