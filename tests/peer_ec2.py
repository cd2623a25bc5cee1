"""Session fixtures for the ec2 tests: ``moto_server`` on a free loopback port.

One ``moto_server`` per test process (``pytest -n 2`` starts two), with the validations of
images, instance types and key pairs switched on, and IAM authentication enforced: the
fixture makes an IAM user with an access key allowed everything, then tells moto (through
``/moto-api/reset-auth``) to check every request's signature from then on, so a wrong secret
is refused with ``AuthFailure`` as on AWS.  The server is never reset: tests keep apart by
infrastructure ids and by the key pairs, groups and subnets they make.

:class:`FaultProxy` is a loopback HTTP proxy in front of the server that counts the EC2
actions it forwards and can answer chosen actions with a throttling or 5xx error first (the
Host header is kept, so the requests' signatures stay valid).  The benchmark uses both.
"""
from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import threading
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union
from urllib.parse import parse_qs, urlsplit

import pytest

from conftest import serves
from occo.localredis import free_port, stop_process

REGION = 'us-east-1'
#: an image moto knows (from moto/ec2/resources/amis.json): Ubuntu 14.04
IMAGE_ID = 'ami-1e749f67'
INSTANCE_TYPE = 't2.micro'
VALIDATIONS = {'MOTO_ENABLE_AMI_VALIDATION': 'true',
               'MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION': 'true',
               'MOTO_ENABLE_KEYPAIR_VALIDATION': 'true'}
START_TIMEOUT = 60.0  # seconds moto_server may take to answer


@dataclass
class Network:
    """What the ec2-ping tutorial names: a key pair, two security groups and a subnet."""

    key_name: str
    security_group_ids: List[str]
    subnet_id: str


class MotoServer:
    """A private ``moto_server`` with IAM authentication on; ``access``/``secret`` is an
    access key it accepts."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.process: Optional[subprocess.Popen] = None
        self.url = ''
        self.access = self.secret = ''

    def __enter__(self) -> 'MotoServer':
        launcher = Path(sys.executable).parent / 'moto_server'
        command = [str(launcher)] if launcher.exists() else [sys.executable, '-m', 'moto.server']
        env = {k: v for k, v in os.environ.items() if not k.startswith(('AWS_', 'MOTO_'))}
        env.update(VALIDATIONS)
        for _ in range(3):  # the free port may be taken between the probe and the bind
            port = free_port()
            with open(self.log, 'ab') as log:
                self.process = subprocess.Popen(command + ['-H', '127.0.0.1', '-p', str(port)],
                                                stdout=log, stderr=subprocess.STDOUT, env=env)
            self.url = f'http://127.0.0.1:{port}'
            try:
                if self._answers():
                    self._enable_authentication()
                    return self
            except BaseException:
                self.stop()
                raise
            self.stop()
        raise RuntimeError(f'moto_server did not start; see {self.log}')

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _answers(self) -> bool:
        return serves(self.process, f'{self.url}/moto-api/', START_TIMEOUT)

    def stop(self) -> None:
        stop_process(self.process)
        self.process = None

    def _enable_authentication(self) -> None:
        iam = self.client('iam', access='AKIDBOOTSTRAP0000000', secret='bootstrap')
        iam.create_user(UserName='occopus')
        iam.put_user_policy(UserName='occopus', PolicyName='everything', PolicyDocument=json.dumps(
            {'Version': '2012-10-17',
             'Statement': [{'Effect': 'Allow', 'Action': '*', 'Resource': '*'}]}))
        key = iam.create_access_key(UserName='occopus')['AccessKey']
        self.access, self.secret = key['AccessKeyId'], key['SecretAccessKey']
        request = urllib.request.Request(f'{self.url}/moto-api/reset-auth', data=b'0', method='POST',
                                         headers={'Content-Type': 'text/plain'})
        with urllib.request.urlopen(request, timeout=10):
            pass

    def client(self, service: str = 'ec2', *, url: Optional[str] = None,
               access: Optional[str] = None, secret: Optional[str] = None) -> Any:
        import boto3
        from botocore.config import Config
        return boto3.client(service, endpoint_url=url or self.url, region_name=REGION,
                            aws_access_key_id=access or self.access,
                            aws_secret_access_key=secret or self.secret,
                            config=Config(retries={'max_attempts': 1}))

    def network(self) -> Network:
        """A fresh key pair, two security groups and a subnet (in a VPC of their own)."""
        ec2, tag = self.client(), uuid.uuid4().hex[:8]
        ec2.create_key_pair(KeyName=f'occo-{tag}')
        vpc = ec2.create_vpc(CidrBlock='10.20.0.0/16')['Vpc']['VpcId']
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock='10.20.1.0/24')['Subnet']['SubnetId']
        groups = [ec2.create_security_group(GroupName=f'occo-{tag}-{i}', Description='occopus test',
                                            VpcId=vpc)['GroupId'] for i in (1, 2)]
        return Network(f'occo-{tag}', groups, subnet)

    def tutorial_values(self, network: Network) -> Dict[str, str]:
        """The ec2 placeholders of the tutorials (``replace_with_<name>``) for this server and
        ``network``."""
        return {'endpoint_of_ec2_interface_of_your_cloud': self.url,
                'regionname_of_your_ec2_interface': REGION,
                'id_of_your_image_on_your_target_cloud': IMAGE_ID,
                'instance_type_of_your_image_on_your_target_cloud': INSTANCE_TYPE,
                'key_name_on_your_target_cloud': network.key_name,
                'security_group_id1_on_your_target_cloud': network.security_group_ids[0],
                'security_group_id2_on_your_target_cloud': network.security_group_ids[1],
                'subnet_id_on_your_target_cloud': network.subnet_id}

    def instances(self, infra_id: str, *, live: bool = True) -> List[Dict[str, Any]]:
        """The instances tagged with ``infra_id`` (with ``live``, those not terminated)."""
        filters = [{'Name': 'tag:occopus:infra_id', 'Values': [infra_id]}]
        found = [i for page in self.client().get_paginator('describe_instances').paginate(Filters=filters)
                 for r in page['Reservations'] for i in r['Instances']]
        return [i for i in found if not live or i['State']['Name'] != 'terminated']


Fault = Union[int, Tuple[int, str, str]]


@dataclass
class FaultProxy:
    """A loopback HTTP proxy in front of ``target`` that counts the actions it forwards
    (``counts``) and answers the first requests of an action with the faults queued in
    ``faults[action]`` (an HTTP status -- 400: RequestLimitExceeded, 503: ServiceUnavailable
    -- or ``(status, code, message)``) before forwarding.  The answers of the actions in
    ``hold`` are kept back (the cloud did the work) until :attr:`release` is set; ``held``
    is set once one is held."""

    target: str
    faults: Dict[str, List[Fault]] = field(default_factory=dict)
    hold: Tuple[str, ...] = ()
    counts: Counter = field(default_factory=Counter)
    refused: Counter = field(default_factory=Counter)
    held: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = 'HTTP/1.1'

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get('Content-Length') or 0))
                action = (parse_qs(body.decode('utf-8', 'replace')).get('Action') or ['?'])[0]
                fault = proxy._fault(action)
                if fault:
                    status, data = _error(fault)
                    return self._answer(status, {'Content-Type': 'text/xml'}, data)
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ('connection', 'keep-alive', 'transfer-encoding')}
                target = urlsplit(proxy.target)
                connection = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
                try:
                    connection.request('POST', self.path, body, headers)
                    answer = connection.getresponse()
                    data = answer.read()
                    if action in proxy.hold:
                        proxy.held.set()
                        proxy.release.wait(60)
                    self._answer(answer.status, {k: v for k, v in answer.getheaders() if k.lower()
                                                 not in ('connection', 'transfer-encoding',
                                                         'content-length', 'keep-alive', 'server', 'date')},
                                 data)
                finally:
                    connection.close()

            def _answer(self, status: int, headers: Dict[str, str], data: bytes) -> None:
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header('Content-Length', str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.server.daemon_threads = True
        self.url = f'http://127.0.0.1:{self.server.server_address[1]}'

    def _fault(self, action: str) -> Fault:
        with self._lock:
            queued = self.faults.get(action)
            if queued:
                self.refused[action] += 1
                return queued.pop(0)
            self.counts[action] += 1
            return 0

    def __enter__(self) -> 'FaultProxy':
        threading.Thread(target=self.server.serve_forever, name='fault-proxy', daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def _error(fault: Fault) -> Tuple[int, bytes]:
    """The status and EC2 error document of a fault."""
    if isinstance(fault, tuple):
        status, code, message = fault
    elif fault < 500:
        status, code, message = fault, 'RequestLimitExceeded', 'Request limit exceeded.'
    else:
        status, code, message = fault, 'ServiceUnavailable', 'The service is unavailable, try again later.'
    return status, (f'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>{code}</Code>'
            f'<Message>{message}</Message></Error></Errors><RequestID>{uuid.uuid4()}</RequestID>'
            '</Response>').encode()


@pytest.fixture(scope='session')
def ec2_peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """This test process's moto_server (started on first use, stopped at the session's end)."""
    with MotoServer(tmp_path_factory.mktemp('moto') / 'moto_server.log') as server:
        yield server
