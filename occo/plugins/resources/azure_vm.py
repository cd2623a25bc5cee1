"""Microsoft Azure virtual machines, with azure-identity and azure-mgmt-compute/-network/-resource.

A node instance is made of parts made in this order, each tagged ``occopus_infra_id``,
``occopus_node_id`` and ``occopus_node``, each waited for (bounded by ``create_timeout`` and the
engine's cancel) but the VM itself, whose create is started and left to run:

* the resource group, if missing (tagged with the infrastructure id; never deleted: it may
  hold what others made);
* unless ``vnet_name`` names an existing virtual network: ``<name>-vnet`` (``10.0.0.0/16``)
  with the subnet ``<name>-subnet`` (``10.0.0.0/24``);
* with ``public_ip_needed``: the public IP address ``<name>-pubip`` (Standard, static);
* the network interface ``<name>-nic`` (unless ``nic_name`` names an existing one);
* the VM ``<name>``, whose OS disk ``<name>-osdisk`` goes with it (``deleteOption: Delete``),
  with the rendered contextualisation as base64 ``customData``.

A failure part-way deletes, newest first, what this node made, and keeps what existed before;
but a transient one (throttling, 5xx, a lost answer) keeps it for the engine's next attempt,
which takes the parts its tags find (ARM's PUTs are idempotent by name) rather than making
them anew -- the engine's rollback finds them by their tags if no attempt succeeds.
The instance id is the VM's ARM id; ``Created.extra['parts']`` lists the ids of every part the
node made (what drop deletes, in dependency order).  States come from the VM's
``provisioningState`` and the PowerState of its instance view; addresses from its public IP
(if any) and NIC.
"""
from __future__ import annotations

import base64
import time
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence

from occo.errors import CloudError, TransientCloudError
from occo.instances import Instance
from occo.plugins.resources.azure_common import (
    PART_WAIT, Account, AzureHandler, Clients, Made, Part, attr, azure_name, finish,
    node_tags, short_text)
from occo.plugins.resources.base import (
    FAILED, PENDING, RUNNING, SHUTDOWN, UNKNOWN, CreateRequest, Created, ResourceStatus,
    resource_keys)
from occo.plugins.resources.common import truthy
from occo.redact import excerpt, printable
from occo.schema import Problem

#: ARM limits customData to 64 KiB of base64
CUSTOM_DATA_LIMIT = 65535
VM_PARTS = ('virtualMachines', 'disks', 'networkInterfaces', 'publicIPAddresses',
            'networkSecurityGroups', 'virtualNetworks')
PROVISIONING = {'creating': (PENDING, None), 'updating': (PENDING, None),
                'migrating': (PENDING, None),
                'deleting': (SHUTDOWN, 'the virtual machine is being deleted'),
                'failed': (FAILED, 'the provisioning of the virtual machine failed'),
                'canceled': (FAILED, 'the provisioning of the virtual machine was canceled')}
POWER = {'running': (RUNNING, None), 'starting': (PENDING, None),
         'stopping': (SHUTDOWN, 'the virtual machine is stopping'),
         'stopped': (SHUTDOWN, 'the virtual machine is stopped'),
         'deallocating': (SHUTDOWN, 'the virtual machine is being deallocated'),
         'deallocated': (SHUTDOWN, 'the virtual machine is deallocated')}



def vm_status(vm: Any) -> ResourceStatus:
    """The state of a VM read with its instance view (anything unexpected is ``unknown``)."""
    provisioning = short_text(attr(vm, 'provisioning_state'), 100) or ''
    statuses = attr(vm, 'instance_view', 'statuses')
    power, message = '', ''
    for status in statuses if isinstance(statuses, list) else ():
        code = short_text(attr(status, 'code'), 100) or ''
        if code.lower().startswith('powerstate/'):
            power = code.split('/', 1)[1].lower()
        elif code.lower().startswith('provisioningstate/') and not message:
            said = attr(status, 'message')
            message = printable(' '.join(said.split()))[:300] if isinstance(said, str) else ''
    low = provisioning.lower()
    if low in PROVISIONING:
        state, why = PROVISIONING[low]
        if why and message:
            why = f'{why}: {message}'
        return ResourceStatus(state, reason=why)
    if low == 'succeeded':
        if not power:
            return ResourceStatus(PENDING, reason='the virtual machine reports no power state yet')
        if power in POWER:
            state, why = POWER[power]
            return ResourceStatus(state, reason=why)
        return ResourceStatus(UNKNOWN, reason=f'the virtual machine reports the power state '
                                              f'{excerpt(power)}, which Occopus does not know')
    return ResourceStatus(UNKNOWN, reason=f'the virtual machine reports the provisioning state '
                          f'{excerpt(provisioning)}, which Occopus does not know'
                          if provisioning else 'the cloud reports no state for the virtual machine')


class AzureVMHandler(AzureHandler):
    type = 'azure_vm'
    noun = 'virtual machine'
    parts = VM_PARTS
    keys = resource_keys(
        required=('endpoint', 'resource_group', 'location', 'vm_size', 'publisher', 'offer', 'sku',
                  'version', 'username'),
        optional=('password', 'ssh_key_data', 'server_name', 'vnet_name', 'subnet_name',
                  'nic_name', 'public_ip_needed', 'customdata'))

    @classmethod
    def validate(cls, section: Mapping[str, Any]) -> Iterable[Optional[Problem]]:
        yield from super().validate(section)
        if 'password' not in section and 'ssh_key_data' not in section:
            yield Problem('Missing key(s): either "password" or "ssh_key_data" must be defined')
        if 'subnet_name' in section and 'vnet_name' not in section and 'nic_name' not in section:
            yield Problem('"subnet_name" names a subnet of "vnet_name": give vnet_name too',
                          ('subnet_name',))

    # -- create ----------------------------------------------------------------------------

    def create(self, request: CreateRequest) -> Created:
        resource = request.resource
        custom = base64.b64encode((getattr(request.context, 'user_data', None) or '').encode()
                                  ).decode()
        if len(custom) > CUSTOM_DATA_LIMIT:
            raise CloudError(self.cloud_said(
                resource, f'the custom data (the rendered contextualisation, base64) is '
                f'{len(custom)} bytes, over the limit of {CUSTOM_DATA_LIMIT}: make it shorter'))
        clients, account = self.clients(resource)
        limit = resource.get('create_timeout')
        until = time.monotonic() + (float(limit) if isinstance(limit, (int, float)) and
                                    not isinstance(limit, bool) else PART_WAIT)
        made = self.earlier(clients, account, request, VM_PARTS)
        try:
            self.ensure_group(clients, account, resource, request.infra_id)
            vm = self._build(request, clients, account, made, custom, until)
        except BaseException as exc:
            self.failed(clients, account, request, made, exc)
            raise
        return Created(vm.rid, state=PENDING, extra={'parts': list(made.parts)})

    def _build(self, request: CreateRequest, clients: Clients, account: Account, made: Made,
               custom: str, until: float) -> Part:
        from azure.mgmt.compute import models as compute
        from azure.mgmt.network import models as network
        resource, sub = request.resource, account.subscription_id
        group, location = str(resource['resource_group']), str(resource['location'])
        name, tags = azure_name(request), node_tags(request)

        def part(kind: str, part_name: str) -> Part:
            return Part.of(sub, group, kind, part_name)

        def make(doing: str, target: Part, start: Any) -> None:
            self._given_up(request)
            if made.has(target):
                return
            made.add(target)
            with self.errors(resource, account, doing):
                finish(start, until, request.cancelled)

        if resource.get('nic_name'):
            nic = part('networkInterfaces', str(resource['nic_name']))
            with self.errors(resource, account, f'looking up network interface {nic.name}'):
                clients.network.network_interfaces.get(group, nic.name)
        else:
            if resource.get('vnet_name'):
                subnet_id = self.existing_subnet(clients, account, resource, group)
            else:
                vnet = part('virtualNetworks', f'{name}-vnet')
                subnet_id = f'{vnet.rid}/subnets/{name}-subnet'
                make(f'creating virtual network {vnet.name}', vnet,
                     lambda polling: clients.network.virtual_networks.begin_create_or_update(
                         group, vnet.name, network.VirtualNetwork(
                             location=location, tags=tags,
                             address_space=network.AddressSpace(address_prefixes=['10.0.0.0/16']),
                             subnets=[network.Subnet(name=f'{name}-subnet',
                                                     address_prefix='10.0.0.0/24')]),
                         polling=polling))
            address = None
            if truthy(resource.get('public_ip_needed')):
                pip = part('publicIPAddresses', f'{name}-pubip')
                make(f'creating public IP address {pip.name}', pip,
                     lambda polling: clients.network.public_ip_addresses.begin_create_or_update(
                         group, pip.name, network.PublicIPAddress(
                             location=location, tags=tags,
                             sku=network.PublicIPAddressSku(name='Standard'),
                             public_ip_allocation_method='Static',
                             public_ip_address_version='IPv4'), polling=polling))
                address = network.PublicIPAddress(id=pip.rid)
            nic = part('networkInterfaces', f'{name}-nic')
            make(f'creating network interface {nic.name}', nic,
                 lambda polling: clients.network.network_interfaces.begin_create_or_update(
                     group, nic.name, network.NetworkInterface(
                         location=location, tags=tags, ip_configurations=[
                             network.NetworkInterfaceIPConfiguration(
                                 name=f'{name}-ipconfig', subnet=network.Subnet(id=subnet_id),
                                 private_ip_allocation_method='Dynamic',
                                 public_ip_address=address)]), polling=polling))
        made.add(part('disks', f'{name}-osdisk'))
        vm = part('virtualMachines', name)
        self._given_up(request)
        if made.has(vm):
            return vm
        made.add(vm)
        password, key = resource.get('password'), resource.get('ssh_key_data')
        username = str(resource['username'])
        linux = None
        if key:
            linux = compute.LinuxConfiguration(
                disable_password_authentication=not password,
                ssh=compute.SshConfiguration(public_keys=[compute.SshPublicKey(
                    path=f'/home/{username}/.ssh/authorized_keys', key_data=str(key))]))
        machine = compute.VirtualMachine(
            location=location, tags=tags,
            hardware_profile=compute.HardwareProfile(vm_size=str(resource['vm_size'])),
            storage_profile=compute.StorageProfile(
                image_reference=compute.ImageReference(
                    publisher=str(resource['publisher']), offer=str(resource['offer']),
                    sku=str(resource['sku']), version=str(resource['version'])),
                os_disk=compute.OSDisk(name=f'{name}-osdisk', create_option='FromImage',
                                       delete_option='Delete')),
            os_profile=compute.OSProfile(
                computer_name=str(resource.get('server_name') or name)[:64],
                admin_username=username, admin_password=str(password) if password else None,
                custom_data=custom or None, linux_configuration=linux),
            network_profile=compute.NetworkProfile(network_interfaces=[
                compute.NetworkInterfaceReference(id=nic.rid, primary=True)]))
        with self.errors(resource, account, f'creating virtual machine {vm.name}'):
            clients.compute.virtual_machines.begin_create_or_update(
                group, vm.name, machine, polling=False)
        return vm

    @staticmethod
    def _given_up(request: CreateRequest) -> None:
        if request.cancelled.is_set():
            raise TransientCloudError('the create call was given up by its caller')

    # -- states ----------------------------------------------------------------------------

    def states(self, instances: Sequence[Instance]) -> Dict[str, ResourceStatus]:
        result: Dict[str, ResourceStatus] = {}
        for instance in instances:
            if instance.instance_id:
                result[instance.node_id] = self._state(instance)
        return result

    def _state(self, instance: Instance) -> ResourceStatus:
        from azure.core.exceptions import ResourceNotFoundError
        resource = instance.resource
        vm = Part(str(instance.instance_id))
        if vm.kind != 'virtualMachines':
            return ResourceStatus(FAILED, reason=f'its create was interrupted before the virtual '
                                  f'machine was made (only {vm.what} {vm.name} exists)')
        clients, account = self.clients(resource)
        with self.errors(resource, account, f'reading virtual machine {vm.name}'):
            try:
                answer = clients.compute.virtual_machines.get(vm.group, vm.name,
                                                              expand='instanceView')
            except ResourceNotFoundError:
                return ResourceStatus(SHUTDOWN, reason=f'the virtual machine {vm.name} is gone')
        status = vm_status(answer)
        if status.state == RUNNING:
            status.addresses, status.private_address = self._addresses(
                clients, account, resource, answer)
        return status

    def _addresses(self, clients: Clients, account: Account, resource: Mapping[str, Any],
                   vm: Any) -> Any:
        """([public or private address], private address) from the VM's first NIC."""
        nics = attr(vm, 'network_profile', 'network_interfaces')
        nic_id = short_text(attr(nics[0], 'id'), 1000) if isinstance(nics, list) and nics else None
        if not nic_id:
            return [], None
        nic = Part(nic_id)
        with self.errors(resource, account, f'reading network interface {nic.name}'):
            answer = clients.network.network_interfaces.get(nic.group, nic.name)
        configs = attr(answer, 'ip_configurations')
        config = configs[0] if isinstance(configs, list) and configs else None
        private = short_text(attr(config, 'private_ip_address'), 100)
        public = None
        pip_id = short_text(attr(config, 'public_ip_address', 'id'), 1000)
        if pip_id:
            pip = Part(pip_id)
            with self.errors(resource, account, f'reading public IP address {pip.name}'):
                answer = clients.network.public_ip_addresses.get(pip.group, pip.name)
            public = short_text(attr(answer, 'ip_address'), 100)
        first = public or private
        return ([first] if first else []), private
