"""The vault endpoint over SSH: what a compute host's key can and cannot do.

Each compute host's key may only run ``zfs-vault-endpoint`` on the vault (a
forced command naming the host and its initiator, ``restrict``), and the
vault's host key is checked against a known_hosts file, never learnt. Every
other test here reaches the vault this way too.
"""

import os
import subprocess
import sys
import tempfile
import threading
import time

import testtools

from cinder_zfs_vault.compute_host import flows
from cinder_zfs_vault.compute_host import vault_client
from cinder_zfs_vault import exception
from cinder_zfs_vault import lease as leaselib
from cinder_zfs_vault import protocol
from cinder_zfs_vault import transfer
from tests.functional.hosts import test_replica
from tools import labkit


MiB = 1024 * 1024


class EndpointTest(test_replica.ReplicaTestCase):

    def ssh(self, command, known_hosts=labkit.KNOWN_HOSTS):
        return subprocess.run(
            ['ssh', '-i', labkit.endpoint_key(), '-o', 'BatchMode=yes',
             '-o', 'IdentitiesOnly=yes', '-o', 'StrictHostKeyChecking=yes',
             '-o', 'UserKnownHostsFile=' + known_hosts, 'vault', command],
            capture_output=True, text=True, timeout=300)

    def synced_replica(self):
        """A disk out here on its local replica, synced once.

        :returns: (the volume, the sync's SyncResult).
        """
        vol = self.disk()
        self.engine.attach(vol.id)
        self.engine.seed(vol.id)
        self.engine.cutover(vol.id)
        return vol, self.engine.sync(vol.id)

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

    def test_a_volume_cinder_did_not_attach_here_is_refused(self):
        """Issue 21, 1: a host's own key reaches no volume it was not given.

        Before, the vault leased any free volume to whichever host asked
        first: a compromised compute host could read, overwrite or pin
        any volume of any project.
        """
        vol = self.volume(size=1, grant=())
        self.vault_random(vol, 0, MiB)
        client = labkit.endpoint_client()
        dataset = 'vault/' + vol.name
        before = self.vault.leases.get(dataset)
        leftovers = labkit.leftovers()
        error = self.assertRaises(leaselib.NotGranted, client.lease, vol.id)
        self.assertIn('not attached to %s' % labkit.HOST, str(error))
        for refused, call in ((protocol.NotYours, client.info),
                              (leaselib.Fenced, lambda v: client.seed(v, 1)),
                              (leaselib.Fenced, lambda v: client.export(v, 1)),
                              (leaselib.NotGranted, self.engine.attach)):
            self.assertRaises(refused, call, vol.id)
        self.assertEqual(before, self.vault.leases.get(dataset))
        self.assertEqual(leftovers, labkit.leftovers())
        self.assertEqual('in vault', self.engine.state(vol.id))
        # The operator grants it (zfs-vault grant): the same key leases it.
        self.vault.grant(vol.id, labkit.HOST)
        gen = client.lease(vol.id)['generation']
        client.release(vol.id, gen)

    def test_a_stream_carrying_properties_is_refused(self):
        """Issue 21, 1: a host's stream cannot set the vault's properties.

        ``zfs send -p`` of the host's replica with this project's sync mode
        set on it: before, ``zfs receive`` took the property onto the
        vault's zvol (as ``received``: in effect where the vault has no
        local value). Now the vault reads the stream's first record and
        refuses it before ``zfs receive`` starts.
        """
        vol, common = self.synced_replica()
        dataset = 'vault/' + vol.name
        replica = 'compute/' + vol.name
        crafted = replica + '@zv-99-0123abcd'
        prop = 'org.openstack.zfsvault:sync-mode'
        lease = self.vault.leases.get(dataset)
        before = self.vault_lab.zvols()
        labkit.run('zfs', 'set', prop + '=nosync', replica)
        labkit.run('zfs', 'snapshot', crafted)
        client = labkit.endpoint_client()
        error = self.assertRaises(
            exception.InvalidInput, transfer.pipe,
            ['zfs', 'send', '-p', '-i', common.snapshot, crafted],
            client.receive_argv(vol.id, lease.generation),
            granted_by='recv')
        self.assertIn('a stream carrying properties', str(error))
        self.assertEqual(lease, self.vault.leases.get(dataset))
        self.assertEqual(before, self.vault_lab.zvols())
        self.assertIsNone(self.vault_lab.resume_token_of(dataset))
        self.assertEqual('-', self.vault_lab.run(
            'zfs', 'get', '-H', '-o', 'received', prop, dataset).strip())
        # The host's own syncs still land.
        labkit.run('zfs', 'destroy', crafted)
        labkit.run('zfs', 'inherit', prop, replica)
        final = self.engine.detach(vol.id)
        self.assertEqual(final.guid,
                         self.vault.leases.get(dataset).synced_guid)

    @testtools.skipUnless(labkit.FAULT_LAB, 'the lab run of the faults')
    def test_a_trickling_stream_loses_its_slot(self):
        """Issue 21, 1: a stall is measured by progress, not by any byte.

        A host's sync stream sends its first record, then a byte every 5 s:
        each byte within the vault's stall timeout (120 s), so before the
        stream held its slot for as long as the host liked (here 16 KiB of
        stream: a day). Now the vault fails it after a window of 120 s under
        protocol.MIN_STREAM_RATE and frees the slot. A fault of a host:
        ~3 min, in the lab run of the faults.
        """
        vol, common = self.synced_replica()
        dataset = 'vault/' + vol.name
        replica = 'compute/' + vol.name
        labkit.write_at(self.engine.names(vol.id).device, 0,
                        labkit.pattern('trickle', MiB))
        labkit.run('zfs', 'snapshot', replica + '@zv-98-0123abcd')
        stream = os.path.join(tempfile.mkdtemp(), 'stream')
        with open(stream, 'wb') as f:
            subprocess.run(['zfs', 'send', '-i', common.snapshot,
                            replica + '@zv-98-0123abcd'], stdout=f,
                           check=True, timeout=300)
        trickle = ('import sys, time\n'
                   'data = open(sys.argv[1], "rb").read()\n'
                   'out = sys.stdout.buffer\n'
                   'out.write(data[:312]); out.flush()\n'
                   'for b in data[312:]:\n'
                   '    time.sleep(5); out.write(bytes([b])); out.flush()\n')
        lease = self.vault.leases.get(dataset)
        client = labkit.endpoint_client()
        start = time.monotonic()
        error = self.assertRaises(
            exception.CommandFailed, transfer.pipe,
            [sys.executable, '-c', trickle, stream],
            client.receive_argv(vol.id, lease.generation),
            stall_timeout=60, granted_by='recv')
        took = time.monotonic() - start
        self.assertIn('stream too slow', str(error))
        self.assertLess(took, 300)
        log = self.vault_lab.run('cat', labkit.VAULT_STATE
                                 + '/slots/slots.log').splitlines()
        self.assertIn(['release', 'receive', vol.id, 'from', labkit.HOST],
                      [line.split()[1:2] + line.split()[3:] for line in log])
        self.assertEqual(common.guid,
                         self.vault.leases.get(dataset).synced_guid)
        sys.stderr.write('zfs-vault lab: a trickling stream (a byte every '
                         '5 s) failed by the vault after %.0f s\n' % took)
        # The host's own syncs still land: the detach's final sync resumes
        # what the vault received of the stream, and syncs on.
        final = self.engine.detach(vol.id)
        self.assertEqual(final.guid,
                         self.vault.leases.get(dataset).synced_guid)

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

    def test_vault_runs_at_most_sync_workers_transfers(self):
        """4 seeds of one host at once, sync_workers = 4: 2 at a time.

        One slot is kept for the syncs a caller waits on (a detach's,
        a snapshot's), one left to the other hosts; all 4 are done. The
        last two
        wait ~16 s for a slot, over twice the stall timeout: a stream
        queued on the vault is not a stalled one (the client's stall clock
        starts at the vault's slot grant).
        """
        self.vault.attributes.set_vault(sync_workers=4)
        self.addCleanup(self.vault.attributes.unset_vault, 'sync_workers')
        client = labkit.endpoint_client()
        seeds = {}
        for _ in range(4):
            vol = self.volume(size=1)
            self.vault_random(vol, 0, 16 * MiB)
            gen = client.lease(vol.id)['generation']
            self.addCleanup(client.release, vol.id, gen)
            seeds[vol.id] = (gen, client.seed(vol.id, gen))
        moved = {}

        def seed(volume_id):
            gen, snap = seeds[volume_id]
            moved[volume_id] = transfer.pipe(
                client.send_argv(volume_id, gen, snap=snap['snap']),
                ['sh', '-c', 'cat > /dev/null'], rate=MiB,
                stall_timeout=6, granted_by='send').bytes

        self.vault_lab.start_sampling()
        labkit.run_all(seed, [(vid,) for vid in seeds], timeout=900)
        most = self.vault_lab.stop_sampling()
        self.assertEqual(sorted(seeds), sorted(moved))
        self.assertTrue(all(n > 16 * MiB for n in moved.values()), moved)
        # What ran on the vault at once (zfs send processes), sampled:
        # this host's cap, one less than the slots seeds may use.
        self.assertEqual(2, most)
        log = self.vault_lab.run('cat', labkit.VAULT_STATE
                                 + '/slots/slots.log').splitlines()
        grants = [line.split() for line in log if ' grant ' in line]
        self.assertLessEqual(4, len(grants))
        self.assertEqual(2, max(int(g[2]) for g in grants[-4:]))

    def test_a_detach_is_not_queued_behind_a_paced_seed(self):
        """Issue 21, 10: a detach's final sync takes the slot kept for it.

        sync_workers = 2 (the default): one slot for seeds and periodic
        syncs, held here by another disk's seed paced at 256 KiB/s (16 MiB:
        about 64 s), and one kept for the syncs a caller waits on. Before,
        this host's cap was that one slot, and the final sync (and so
        cinder-volume's detach RPC) waited for the seed's whole length.

        And the flow lock (issue 21, 10): a periodic sync of the disk,
        queued at the vault behind that seed, held the disk's lock; the
        detach waited for it. It gives way now (transfer.pipe's
        ``preempted``): the detach runs through the agent's Orchestrator
        while it is queued, as its RPC runs it (seed.Urgency.waiting).
        """
        self.vault.attributes.set_vault(sync_workers=2)
        self.addCleanup(self.vault.attributes.unset_vault, 'sync_workers')
        vol = self.disk()
        device = self.engine.attach(vol.id)
        self.engine.seed(vol.id)
        self.engine.cutover(vol.id)
        labkit.write_at(device, 8 * MiB, b'detach!!' * 512)
        client = labkit.endpoint_client()
        other = self.volume(size=1)
        self.vault_random(other, 0, 16 * MiB)
        gen = client.lease(other.id)['generation']
        self.addCleanup(client.release, other.id, gen)
        snap = client.seed(other.id, gen)['snap']
        pace = transfer.Throttle(256 * 1024)
        seeding = threading.Thread(target=transfer.pipe, args=(
            client.send_argv(other.id, gen, snap=snap),
            ['sh', '-c', 'cat > /dev/null']), kwargs=dict(
                rate=pace, stall_timeout=60, granted_by='send'))
        seeding.start()
        self.addCleanup(seeding.join, 600)
        log = labkit.VAULT_STATE + '/slots/slots.log'
        self.wait_for(lambda: 'grant 1 send %s' % other.id in
                      self.vault_lab.run('cat', log), 120,
                      'the paced seed\'s slot')
        path = os.path.join(labkit.state_path(), 'logbook-preempt.sqlite')
        self.addCleanup(lambda: os.path.exists(path) and os.unlink(path))
        orch = flows.Orchestrator(self.engine, 'sqlite:///' + path)
        labkit.write_at(device, 9 * MiB, b'periodic' * 512)
        periodic = []

        def periodic_sync():  # as the scheduler runs it: rate None
            try:
                periodic.append(orch.sync(vol.id))
            except Exception as e:
                periodic.append(e)
        queued = threading.Thread(target=periodic_sync)
        queued.start()
        self.addCleanup(queued.join, 600)
        # Its stream waits at the vault for the slot the seed holds.
        self.wait_for(lambda: labkit.run(
            'pgrep', '-f', 'receive %s ' % vol.id, check=False).strip(), 120,
            'the periodic sync\'s stream')
        time.sleep(2)
        self.assertEqual([], periodic)
        start = time.monotonic()
        with self.engine.urgency.waiting(vol.id):  # as the agent's RPC
            orch.detach(vol.id)
        took = time.monotonic() - start
        queued.join(60)
        self.assertIsInstance(periodic[0], exception.Preempted)
        self.assertEqual([], orch.in_flight())
        self.assertTrue(seeding.is_alive(), 'the seed ended before the '
                        'detach: nothing was measured')
        pace.rate = None  # the rest of the seed at once: ~50 s less to wait
        self.assertEqual(b'detach!!' * 512,
                         self.vault_read(vol, 8 * MiB, 4096))
        self.assertEqual(b'periodic' * 512,
                         self.vault_read(vol, 9 * MiB, 4096))
        sys.stderr.write('zfs-vault lab: detach beside a paced seed holding '
                         'the shared slot: %.1f s\n' % took)
