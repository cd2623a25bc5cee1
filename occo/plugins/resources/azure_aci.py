"""Microsoft Azure Container Instances, with azure-mgmt-containerinstance.

A node instance is one container group ``<name>`` holding one container of ``image`` with
``cpu_cores``, ``memory`` (GB), ``ports`` (``80`` or ``"53/UDP"``) and optionally a GPU, tagged
``occopus_infra_id``, ``occopus_node_id`` and ``occopus_node``; its environment comes from the
docker contextualisation's ``KEY=VALUE`` items (items without ``=`` are ignored) and its
command from the contextualisation's list.

``network_type: Public``: a public address with the DNS label ``<name>``, and the variable
``_OCCOPUS_ALLOCATED_FQDN=<name>.<location>.azurecontainer.io``.  ``Private``: the group joins
``subnet_name`` of ``vnet_name`` if given, else a virtual network ``<name>-vnet``
(``10.0.0.0/16``) with a subnet delegated to container groups, made (tagged) for it and
deleted with it.  The create is started and left to run; states map ``Pending``/``Creating``
to pending, ``Succeeded``/``Running`` to running, ``Failed`` to failed, anything else to
unknown.  Addresses: ``[fqdn, ip]``, leaving out missing ones.
"""
from __future__ import annotations

import time
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

from occo.errors import CloudError, TransientCloudError
from occo.instances import Instance
from occo.plugins.resources.azure_common import (
    PART_WAIT, Account, AzureHandler, Clients, Made, Part, attr, azure_name, finish,
    node_tags, short_text)
from occo.plugins.resources.base import (
    FAILED, PENDING, RUNNING, SHUTDOWN, UNKNOWN, CreateRequest, Created, ResourceStatus,
    resource_keys)
from occo.redact import excerpt
from occo.schema import Problem, expect_list, is_template

ACI_PARTS = ('containerGroups', 'virtualNetworks')
STATES = {'pending': PENDING, 'creating': PENDING, 'updating': PENDING, 'repairing': PENDING,
          'succeeded': RUNNING, 'running': RUNNING, 'failed': FAILED,
          'canceled': FAILED, 'deleting': SHUTDOWN, 'stopped': SHUTDOWN, 'terminated': SHUTDOWN}
FQDN_VARIABLE = '_OCCOPUS_ALLOCATED_FQDN'


def environment(env: Any) -> Dict[str, str]:
    """``KEY=VALUE`` items as a mapping (items without ``=`` ignored)."""
    found: Dict[str, str] = {}
    for item in env if isinstance(env, list) else ():
        name, equals, value = str(item).partition('=')
        if equals and name:
            found[name] = value
    return found


def ports(value: Any) -> List[tuple]:
    """``[80, "53/UDP"]`` as ``[(80, 'TCP'), (53, 'UDP')]`` (what does not parse is refused)."""
    found = []
    for item in value if isinstance(value, list) else ():
        number, _, protocol = str(item).partition('/')
        if not number.strip().isdigit() or not 0 < int(number) < 65536 or \
                protocol.strip().upper() not in ('', 'TCP', 'UDP'):
            raise ValueError(f'a port must be a number with an optional /TCP or /UDP, not '
                             f'{excerpt(item)}')
        found.append((int(number), protocol.strip().upper() or 'TCP'))
    return found


def group_status(group: Any) -> ResourceStatus:
    """The state of a container group (anything unexpected is ``unknown``)."""
    provisioning = short_text(attr(group, 'provisioning_state'), 100) or ''
    view = short_text(attr(group, 'instance_view', 'state'), 100) or ''
    low = provisioning.lower()
    if low == 'succeeded' and view.lower() in STATES:
        low = view.lower()
    state = STATES.get(low)
    if state is None:
        return ResourceStatus(UNKNOWN, reason=f'the container group reports the state '
                              f'{excerpt(provisioning)}, which Occopus does not know'
                              if provisioning else
                              'the cloud reports no state for the container group')
    addresses = [a for a in (short_text(attr(group, 'ip_address', 'fqdn')),
                             short_text(attr(group, 'ip_address', 'ip'), 100)) if a]
    private = short_text(attr(group, 'ip_address', 'ip'), 100)
    reason = None
    if state == FAILED:
        reason = f'the container group is {provisioning.lower() or "failed"}'
    elif state == SHUTDOWN:
        reason = f'the container group is {low}'
    return ResourceStatus(state, addresses if state == RUNNING else [], private, reason)


class AzureACIHandler(AzureHandler):
    type = 'azure_aci'
    noun = 'container group'
    parts = ACI_PARTS
    contexts = ('docker', 'basic')
    keys = resource_keys(
        required=('endpoint', 'resource_group', 'location', 'image', 'network_type', 'memory',
                  'cpu_cores', 'os_type'),
        optional=('ports', 'gpu_type', 'gpu_count', 'vnet_name', 'subnet_name'))

    @classmethod
    def validate(cls, section: Mapping[str, Any]) -> Iterable[Optional[Problem]]:
        yield from super().validate(section)
        network = section.get('network_type')
        if not is_template(network) and str(network).lower() not in ('public', 'private'):
            yield Problem(f'Network type "{network}" is not supported (expected Public or Private)',
                          ('network_type',))
        yield expect_list(section, 'ports')

    @classmethod
    def check_context(cls, context: Optional[Mapping[str, Any]]) -> Optional[Problem]:
        problem = super().check_context(context)
        if problem is None and context is not None and context.get('type') == 'docker' \
                and 'command' in context and not isinstance(context['command'], list):
            return Problem("'command' must be a list for resource type 'azure_aci' "
                           "(e.g. [sh, -c, 'echo hello'])", ('command',))
        return problem

    # -- create ----------------------------------------------------------------------------

    def create(self, request: CreateRequest) -> Created:
        resource = request.resource
        try:
            opened = ports(resource.get('ports'))
            cpu, memory = float(resource['cpu_cores']), float(resource['memory'])
            int(resource.get('gpu_count') or 1)  # used below: refused here, before anything is made
        except (TypeError, ValueError) as exc:
            raise CloudError(self.cloud_said(resource, f'cpu_cores, memory, ports and gpu_count: '
                                                       f'{exc}')) from None
        clients, account = self.clients(resource)
        limit = resource.get('create_timeout')
        until = time.monotonic() + (float(limit) if isinstance(limit, (int, float)) and
                                    not isinstance(limit, bool) else PART_WAIT)
        made = self.earlier(clients, account, request, ACI_PARTS)
        try:
            self.ensure_group(clients, account, resource, request.infra_id)
            group = self._build(request, clients, account, made, opened, cpu, memory, until)
        except BaseException as exc:
            self.failed(clients, account, request, made, exc)
            raise
        return Created(group.rid, state=PENDING, extra={'parts': list(made.parts)})

    def _build(self, request: CreateRequest, clients: Clients, account: Account, made: Made,
               opened: List[tuple], cpu: float, memory: float, until: float) -> Part:
        from azure.mgmt.containerinstance import models as aci
        from azure.mgmt.network import models as network
        resource, sub = request.resource, account.subscription_id
        group, location = str(resource['resource_group']), str(resource['location'])
        name, tags = azure_name(request, 63).lower(), node_tags(request)
        context = request.context
        env = environment(getattr(context, 'env', None))
        public = str(resource.get('network_type')).lower() == 'public'
        subnets = None
        if public:
            env[FQDN_VARIABLE] = f'{name}.{location}.azurecontainer.io'
        elif resource.get('vnet_name'):
            subnet_id = self.existing_subnet(clients, account, resource, group)
            subnets = [aci.ContainerGroupSubnetId(id=subnet_id)]
        else:
            vnet = Part.of(sub, group, 'virtualNetworks', f'{name}-vnet')
            if request.cancelled.is_set():
                raise TransientCloudError('the create call was given up by its caller')
            if not made.has(vnet):
                made.add(vnet)
                with self.errors(resource, account, f'creating virtual network {vnet.name}'):
                    finish(lambda polling: clients.network.virtual_networks.begin_create_or_update(
                        group, vnet.name, network.VirtualNetwork(
                            location=location, tags=tags,
                            address_space=network.AddressSpace(address_prefixes=['10.0.0.0/16']),
                            subnets=[network.Subnet(
                                name=f'{name}-subnet', address_prefix='10.0.0.0/24',
                                delegations=[network.Delegation(
                                    name='aci', service_name='Microsoft.ContainerInstance/'
                                                             'containerGroups')])]),
                        polling=polling), until, request.cancelled)
            subnets = [aci.ContainerGroupSubnetId(id=f'{vnet.rid}/subnets/{name}-subnet')]
        gpu = None
        if resource.get('gpu_type'):
            gpu = aci.GpuResource(count=int(resource.get('gpu_count') or 1),
                                  sku=str(resource['gpu_type']))
        command = getattr(context, 'command', None)
        container = aci.Container(
            name=name, image=str(resource['image']),
            command=[str(c) for c in command] if isinstance(command, list) and command else None,
            ports=[aci.ContainerPort(port=p, protocol=proto) for p, proto in opened] or None,
            environment_variables=[aci.EnvironmentVariable(name=k, value=v)
                                   for k, v in env.items()] or None,
            resources=aci.ResourceRequirements(requests=aci.ResourceRequests(
                memory_in_gb=memory, cpu=cpu, gpu=gpu)))
        address = None
        if public or opened:
            address = aci.IpAddress(
                type='Public' if public else 'Private',
                ports=[aci.Port(port=p, protocol=proto) for p, proto in opened] or
                [aci.Port(port=80, protocol='TCP')],
                dns_name_label=name if public else None)
        container_group = Part.of(sub, group, 'containerGroups', name)
        if request.cancelled.is_set():
            raise TransientCloudError('the create call was given up by its caller')
        if made.has(container_group):
            return container_group
        made.add(container_group)
        with self.errors(resource, account, f'creating container group {name}'):
            clients.aci.container_groups.begin_create_or_update(group, name, aci.ContainerGroup(
                location=location, tags=tags, containers=[container],
                os_type=str(resource['os_type']).capitalize(), restart_policy='Always',
                ip_address=address, subnet_ids=subnets), polling=False)
        return container_group

    # -- states, drop, find --------------------------------------------------------------------

    def states(self, instances: Sequence[Instance]) -> Dict[str, ResourceStatus]:
        from azure.core.exceptions import ResourceNotFoundError
        result: Dict[str, ResourceStatus] = {}
        for instance in instances:
            if not instance.instance_id:
                continue
            part = Part(str(instance.instance_id))
            if part.kind != 'containerGroups':
                result[instance.node_id] = ResourceStatus(FAILED, reason=(
                    f'its create was interrupted before the container group was made (only '
                    f'{part.what} {part.name} exists)'))
                continue
            clients, account = self.clients(instance.resource)
            with self.errors(instance.resource, account, f'reading container group {part.name}'):
                try:
                    answer = clients.aci.container_groups.get(part.group, part.name)
                except ResourceNotFoundError:
                    result[instance.node_id] = ResourceStatus(
                        SHUTDOWN, reason=f'the container group {part.name} is gone')
                    continue
            result[instance.node_id] = group_status(answer)
        return result
