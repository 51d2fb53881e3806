"""The driver with its vault reached over SSH (sshd on the lab's loopback)."""

import os
import tempfile

from cinder import exception as cinder_exception
from cinder import ssh_utils  # noqa: F401 (registers the ssh_* options)

from cinder_zfs_vault import exception
from cinder_zfs_vault import transfer
from tests.functional import base
from tools import labkit

MiB = 1024 * 1024


class SSHVaultTest(base.FunctionalTestCase):

    def setUp(self):
        super(SSHVaultTest, self).setUp()
        self.dir = tempfile.mkdtemp(prefix='ssh-')
        # Cinder's SSHPool loads the private key as RSA (PEM).
        self.key = os.path.join(self.dir, 'id_rsa')
        labkit.run('ssh-keygen', '-q', '-t', 'rsa', '-b', '3072', '-m', 'PEM',
                   '-N', '', '-f', self.key)
        os.makedirs('/root/.ssh', mode=0o700, exist_ok=True)
        with open(self.key + '.pub') as pub, \
                open('/root/.ssh/authorized_keys', 'a') as auth:
            auth.write(pub.read())
        labkit.run('ssh-keygen', '-A')
        os.makedirs('/run/sshd', exist_ok=True)
        if not labkit.run('pgrep', '-x', 'sshd', check=False).strip():
            labkit.run('/usr/sbin/sshd', '-o', 'ListenAddress=127.0.0.1')
        self.known_hosts = os.path.join(self.dir, 'known_hosts')
        scan = labkit.run('ssh-keyscan', '127.0.0.1')
        with open(self.known_hosts, 'w') as f:
            f.write(scan)
        labkit.CONF.set_override('strict_ssh_host_key_policy', True)
        self.addCleanup(labkit.CONF.clear_override,
                        'strict_ssh_host_key_policy')

    def ssh_driver(self, known_hosts):
        labkit.CONF.set_override('ssh_hosts_key_file', known_hosts)
        self.addCleanup(labkit.CONF.clear_override, 'ssh_hosts_key_file')
        return labkit.make_driver(
            'ssh', zfs_vault_ssh_host='127.0.0.1',
            zfs_vault_ssh_private_key=self.key)

    def test_volume_operations_over_ssh(self):
        drv = self.ssh_driver(self.known_hosts)
        origin = self.volume(size=1, drv=drv)
        clone = self.volume(size=2, create=False, drv=drv)
        drv.create_cloned_volume(clone, origin)
        self.assertIn('vault/' + clone.name, labkit.zvols())
        pool, = drv.get_volume_stats(refresh=True)['pools']
        self.assertGreaterEqual(pool['provisioned_capacity_gb'], 3)

    def test_unknown_host_key_refused(self):
        empty = os.path.join(self.dir, 'empty_known_hosts')
        open(empty, 'w').close()
        self.assertRaises(cinder_exception.VolumeBackendAPIException,
                          self.ssh_driver, empty)

    def ssh_engine(self, known_hosts):
        """An engine whose vault is reached over SSH.

        zfs commands go through Cinder's SSHPool (host keys from
        ssh_hosts_key_file), streams through OpenSSH with ``known_hosts``.
        """
        from cinder_zfs_vault import executor
        labkit.CONF.set_override('ssh_hosts_key_file', self.known_hosts)
        self.addCleanup(labkit.CONF.clear_override, 'ssh_hosts_key_file')
        return labkit.make_engine(vault_executor=executor.SSHExecutor(
            '127.0.0.1', private_key=self.key, known_hosts=known_hosts))

    def test_replica_streams_over_ssh(self):
        """Seed and syncs stream through OpenSSH, host key checked."""
        vol = self.volume(size=1)
        labkit.write_at(self.zvol(vol), 16 * MiB, labkit.pattern('ssh', MiB))
        engine = self.ssh_engine(self.known_hosts)
        self.addCleanup(engine.detach, vol.id)
        device = engine.attach(vol.id)
        writer = labkit.VerifyingWriter(device, blocks=2048).start()
        self.addCleanup(writer.stop)
        self.assertGreater(engine.seed(vol.id).bytes, 0)
        engine.cutover(vol.id)
        writer.wait_writes(writer.writes + 50, timeout=60)
        sync = engine.sync(vol.id)
        self.assertGreater(sync.bytes, 0)
        # A vault whose host key is not known: the stream is refused and
        # the vault keeps what it had.
        stranger = self.ssh_engine(os.path.join(self.dir, 'none'))
        open(os.path.join(self.dir, 'none'), 'w').close()
        before = labkit.zvols()
        self.assertRaises(exception.CommandFailed, transfer.pipe,
                          engine.compute_zfs.stream_argv(
                              transfer.send_argv(sync.snapshot)),
                          stranger.vault_zfs.stream_argv(
                              transfer.recv_argv('vault/stranger')))
        self.assertEqual(before, labkit.zvols())
        writer.stop()
        final = engine.detach(vol.id)
        self.assertIsNotNone(final)
        self.assertEqual([], writer.verify(self.zvol(vol)))
        # Untouched data (outside the writer's 8 MiB) came through too.
        self.assertEqual(labkit.pattern('ssh', MiB),
                         labkit.read_at(self.zvol(vol), 16 * MiB, MiB))
