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

"""The vault client over a stand-in transport: what is tried again, what not.

The transport is a small program that plays ssh: it fails the first tries
as ssh does when sshd turns a connection away (``MaxStartups``), then
answers. Seen in the lab when a compute host attached 20 disks at once.
"""

import os
import sys

import fixtures
import testtools

from cinder_zfs_vault.compute_host import vault_client
from cinder_zfs_vault import exception
from cinder_zfs_vault import lease as leaselib
from cinder_zfs_vault import protocol

#: argv: counter file, tries to turn away, then what to do.
SSH = r'''
import sys
counter, refused, then = sys.argv[1], int(sys.argv[2]), sys.argv[3]
try:
    n = int(open(counter).read())
except FileNotFoundError:
    n = 0
open(counter, 'w').write(str(n + 1))
if n < refused:
    sys.stderr.write('kex_exchange_identification: read: Connection reset '
                     'by peer\r\nConnection reset by 192.0.2.10 port 22\r\n')
    sys.exit(255)
if then == 'answer':
    print('{"generation": 4}')
elif then == 'fenced':
    sys.stderr.write('zfs-vault-endpoint: Fenced: vault/volume-x was '
                     'fenced from compute-1\n')
    sys.exit(1)
else:
    sys.stdout.write('stream')
'''


class ReconnectTest(testtools.TestCase):

    def setUp(self):
        super(ReconnectTest, self).setUp()
        self.useFixture(fixtures.MockPatchObject(vault_client,
                                                 'CONNECT_WAIT', 0))
        self.counter = os.path.join(self.useFixture(
            fixtures.TempDir()).path, 'tries')

    def ssh(self, refused, then):
        return [sys.executable, '-c', SSH, self.counter, str(refused), then]

    def tries(self):
        with open(self.counter) as f:
            return int(f.read())

    def test_turned_away_request_is_tried_again(self):
        client = vault_client.VaultClient(self.ssh(2, 'answer'))
        self.assertEqual({'generation': 4}, client.lease('x'))
        self.assertEqual(3, self.tries())

    def test_refusal_is_not_tried_again(self):
        client = vault_client.VaultClient(self.ssh(0, 'fenced'))
        self.assertRaises(leaselib.Fenced, client.lease, 'x')
        self.assertEqual(1, self.tries())

    def test_unreachable_vault_fails_after_the_last_try(self):
        client = vault_client.VaultClient(self.ssh(99, 'answer'))
        e = self.assertRaises(protocol.EndpointError, client.lease, 'x')
        self.assertIn('kex_exchange_identification', str(e))
        self.assertEqual(vault_client.CONNECT_ATTEMPTS, self.tries())

    def test_stream_started_again_when_ssh_did_not_connect(self):
        out = self.counter + '.out'
        result = vault_client.pipe(
            self.ssh(1, 'stream'),
            [sys.executable, '-c', 'import shutil, sys; shutil.copyfileobj('
             'sys.stdin.buffer, open(sys.argv[1], "wb"))', out])
        self.assertEqual(6, result.bytes)
        with open(out, 'rb') as f:
            self.assertEqual(b'stream', f.read())
        self.assertEqual(2, self.tries())

    def test_stream_that_failed_otherwise_is_not(self):
        self.assertRaises(exception.CommandFailed, vault_client.pipe,
                          [sys.executable, '-c', 'import sys; sys.exit(3)'],
                          [sys.executable, '-c', 'import sys; '
                           'sys.stdin.read()'])
