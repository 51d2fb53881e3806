"""The vault endpoint over SSH: what a compute host's key can and cannot do.

Each compute host's key may only run ``zfs-vault-endpoint`` on the vault (a
forced command naming the host and its initiator, ``restrict``), and the
vault's host key is checked against a known_hosts file, never learnt. Every
other test here reaches the vault this way too.
"""

import os
import subprocess
import tempfile

from cinder_zfs_vault.compute_host import vault_client
from cinder_zfs_vault import protocol
from tests.functional.hosts import test_replica
from tools import labkit


class EndpointTest(test_replica.ReplicaTestCase):

    def ssh(self, command, known_hosts=labkit.KNOWN_HOSTS):
        return subprocess.run(
            ['ssh', '-i', labkit.endpoint_key(), '-o', 'BatchMode=yes',
             '-o', 'IdentitiesOnly=yes', '-o', 'StrictHostKeyChecking=yes',
             '-o', 'UserKnownHostsFile=' + known_hosts, 'vault', command],
            capture_output=True, text=True, timeout=300)

    def test_restricted_key_runs_requests_only(self):
        vol = self.volume(size=1)
        before = labkit.leftovers()
        for command in ('zfs destroy -r vault/' + vol.name,
                        'sh -c "touch /tmp/pwned"',
                        'lease %s; zfs destroy vault' % vol.id,
                        'lease ../../etc',
                        'info $(reboot)'):
            result = self.ssh(command)
            self.assertEqual(1, result.returncode, result)
            self.assertIn(protocol.PROGRAM + ': InvalidInput: ',
                          result.stderr)
        self.assertNotIn('pwned', self.vault_lab.run('ls', '/tmp'))
        self.assertEqual(before, labkit.leftovers())
        # A request it may make names only a disk, as this host.
        self.assertRaises(protocol.NotYours, labkit.endpoint_client().info,
                          vol.id)

    def test_unknown_vault_host_key_refused(self):
        vol = self.volume(size=1)
        empty = os.path.join(tempfile.mkdtemp(), 'known_hosts')
        open(empty, 'w').close()
        stranger = vault_client.VaultClient(vault_client.ssh_transport(
            'vault', labkit.endpoint_key(), empty))
        before = labkit.leftovers()
        error = self.assertRaises(protocol.EndpointError, stranger.lease,
                                  vol.id)
        self.assertIn('Host key verification failed', str(error))
        self.assertEqual(before, labkit.leftovers())
        self.assertIsNone(self.vault.leases.get('vault/' + vol.name).owner)
