# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at
#
#      http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS, WITHOUT
# WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied. See the
# License for the specific language governing permissions and limitations
# under the License.

"""The stub and the endpoint server: a real socket, real descriptors.

The server runs in a process of its own, as in production: this test
process may be monkey-patched by eventlet (Cinder's test base does it),
whose green sockets cannot pass descriptors.
"""

import contextlib
import json
import os
import stat
import subprocess
import sys

import fixtures
import testtools

from cinder_zfs_vault import lease as leaselib

VID = '0c3d8d55-2aa7-4dc0-9e6c-8e2f2b1e2b11'
IQN = 'iqn.2004-10.org.zfslab:compute-1'


class FakeAuthority(object):
    """What the server's Endpoint calls, recorded in a file; streams real."""

    def __init__(self, record):
        self.record = record
        self.slots = self

    def _call(self, *call):
        with open(self.record, 'a') as f:
            f.write(json.dumps(call) + '\n')

    @contextlib.contextmanager
    def slot(self, who, host=None, urgent=False):
        self._call('slot', who)
        yield

    def lease(self, host, volume_id):
        self._call('lease', host, volume_id)
        if host == 'compute-9':
            raise leaselib.LeaseHeld('leased to compute-1')
        return {'generation': 3}

    def send_argv(self, host, volume_id, generation, snap=None, token=None):
        self._call('send', host, volume_id, generation, snap)
        return ['sh', '-c', 'printf "stream of %s"' % snap]


SERVER = """
import sys
from cinder_zfs_vault.vault_host import server
from tests.unit.vault_host import test_server
srv = server.Server(test_server.FakeAuthority(sys.argv[2]))
sock = server.listen(sys.argv[1])
print('ready', flush=True)
srv.serve(sock)
"""


class ServerTest(testtools.TestCase):

    def setUp(self):
        super(ServerTest, self).setUp()
        tmp = self.useFixture(fixtures.TempDir()).path
        self.path = os.path.join(tmp, 'run', 'endpoint.sock')
        self.record = os.path.join(tmp, 'calls')
        server = subprocess.Popen(
            [sys.executable, '-c', SERVER, self.path, self.record],
            stdout=subprocess.PIPE, text=True, env=self.env)
        self.addCleanup(server.wait, 10)
        self.addCleanup(server.kill)
        self.assertEqual('ready', server.stdout.readline().strip())

    env = dict(os.environ, PYTHONPATH=os.getcwd())

    def calls(self):
        if not os.path.exists(self.record):
            return []
        with open(self.record) as f:
            return [tuple(json.loads(line)) for line in f]

    def stub(self, request, host='compute-1', initiator=IQN, path=None):
        return subprocess.run(
            [sys.executable, '-m', 'cinder_zfs_vault.cmd.endpoint',
             '--host=' + host, '--initiator=' + initiator,
             '--socket', path or self.path, '--', request],
            capture_output=True, timeout=60, env=self.env)

    def test_socket_is_root_only(self):
        mode = stat.S_IMODE(os.stat(self.path).st_mode)
        self.assertEqual(0o600, mode & 0o777)

    def test_request_answered_on_the_stubs_stdout(self):
        result = self.stub('lease %s' % VID)
        self.assertEqual(0, result.returncode, result.stderr)
        self.assertEqual({'generation': 3}, json.loads(result.stdout))
        self.assertEqual([('lease', 'compute-1', VID)], self.calls())

    def test_refusal_and_exit_status(self):
        result = self.stub('lease %s' % VID, host='compute-9')
        self.assertEqual(1, result.returncode)
        self.assertEqual(b'zfs-vault-endpoint: LeaseHeld: leased to '
                         b'compute-1\n', result.stderr)

    def test_stream_goes_straight_to_the_channel(self):
        result = self.stub('send %s 3 zv-1-0123abcd' % VID)
        self.assertEqual(0, result.returncode, result.stderr)
        self.assertEqual(b'stream of zv-1-0123abcd', result.stdout)
        self.assertEqual(('slot', 'send %s to compute-1' % VID),
                         self.calls()[-1])

    def test_host_names_from_the_key_are_checked_too(self):
        for host, initiator in (('-o', IQN), ('a\x1b[2J', IQN),
                                ('compute-1', 'iqn.x y')):
            result = self.stub('lease %s' % VID, host=host,
                               initiator=initiator)
            self.assertEqual(1, result.returncode)
            self.assertIn(b': InvalidInput: ', result.stderr)
        self.assertEqual([], self.calls())

    def test_no_server(self):
        result = self.stub('lease %s' % VID, path=self.path + '.none')
        self.assertEqual(1, result.returncode)
        self.assertIn(b'zfs-vault-endpoint: EndpointError: the vault '
                      b'endpoint server is not answering', result.stderr)
