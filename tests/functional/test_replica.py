"""The replica engine on real ZFS, LIO, open-iscsi and device-mapper."""

import os
import uuid

from cinder_zfs_vault import exception
from cinder_zfs_vault import lease as leaselib
from cinder_zfs_vault import replica
from cinder_zfs_vault import transfer
from tests.functional import base
from tools import labkit

MiB = 1024 * 1024


class ReplicaTestCase(base.FunctionalTestCase):

    def setUp(self):
        super(ReplicaTestCase, self).setUp()
        self.engine = labkit.make_engine()

    def disk(self, size=1):
        """A vault volume with known content in its first 64 MiB."""
        vol = self.volume(size=size)
        labkit.write_at(self.zvol(vol), 0, labkit.pattern('base', 64 * MiB))
        self.addCleanup(self._return_disk, vol.id)
        return vol

    def _return_disk(self, volume_id):
        """Cleanup: what a test left out goes back to the vault.

        A fenced or diverged replica is discarded after a lease break.
        """
        n = self.engine.names(volume_id)
        try:
            self.engine.detach(volume_id)
        except (leaselib.Fenced, exception.Diverged):
            self.engine.leases.break_lease(n.vault)
            self.engine.discard_fenced(volume_id)
        for snap in labkit.zvols():
            if snap.startswith(n.vault + '@'):
                labkit.run('zfs', 'release', replica.HOLD_TAG, snap,
                           check=False)


class LifecycleTest(ReplicaTestCase):

    def test_boot_seed_cutover_sync_detach_with_writer(self):
        vol = self.disk(size=1)
        device = self.engine.attach(vol.id)
        self.assertEqual('/dev/mapper/zvault-' + vol.id, device)
        # The VM sees the vault's data at once, through the dm snapshot.
        self.assertEqual(labkit.pattern('base', MiB),
                         labkit.read_at(device, 0, MiB))
        before = labkit.VerifyingWriter(device, blocks=8192).start()
        self.addCleanup(before.stop)
        done = []
        seed = self.engine.seed(vol.id, progress=lambda b, e: done.append(b))
        self.assertGreater(seed.bytes, 0)
        self.assertEqual(seed.bytes, done[-1])
        self.assertEqual('seeding', self.engine.state(vol.id))
        # The writer goes on through the cut-over.
        pauses = self.engine.cutover(vol.id)
        self.assertEqual(2, len(pauses))
        self.assertEqual('local', self.engine.state(vol.id))
        self.assertEqual([], labkit.sessions())  # off the iSCSI origin
        self.assertEqual(['zvault-' + vol.id], [
            d for d in labkit.dm_devices() if vol.id in d])
        before.stop()
        after = labkit.VerifyingWriter(device, blocks=8192, first=8192,
                                       seed=2).start()
        self.addCleanup(after.stop)
        first = self.engine.sync(vol.id)
        second = self.engine.sync(vol.id)
        self.assertNotEqual(first.guid, second.guid)
        lease = self.engine.leases.get('vault/' + vol.name)
        self.assertEqual(second.guid, lease.synced_guid)
        after.stop()
        self.assertGreater(before.writes, 0)
        self.assertGreater(after.writes, 0)
        final = self.engine.detach(vol.id)
        self.assertIsNotNone(final)
        # Every write the VM made is in the vault; the rest is untouched.
        vault = self.zvol(vol)
        self.assertEqual([], before.verify(vault))
        self.assertEqual([], after.verify(vault))
        written = set(before.last) | set(after.last)
        data = labkit.pattern('base', 64 * MiB)
        for i in range(0, 64 * MiB // 4096, 97):
            if i not in written:
                self.assertEqual(data[i * 4096:(i + 1) * 4096],
                                 labkit.read_at(vault, i * 4096, 4096))
        lease = self.engine.leases.get('vault/' + vol.name)
        self.assertIsNone(lease.owner)
        self.assertEqual(final.guid, lease.synced_guid)
        self.assertEqual('in vault', self.engine.state(vol.id))

    def cutover_under_running_writer(self, engine):
        """Seed, then cut over with a writer running; all of it verified.

        :returns: how many times the writer was held (the quiesce hook).
        """
        vol = self.disk()
        device = engine.attach(vol.id)
        # Writes before the seed land in the COW zvol and must be merged.
        labkit.write_at(device, 32 * MiB, b'pre-seed' * 512)
        engine.seed(vol.id)
        writer = labkit.VerifyingWriter(device, blocks=4096)
        self.addCleanup(writer.start().stop)
        writer.wait_writes(200, timeout=120)
        engine.cutover(vol.id)
        writer.wait_writes(writer.writes + 200, timeout=120)
        writer.stop()
        self.assertEqual('local', engine.mapping(vol.id))
        self.assertEqual(b'pre-seed' * 512,
                         labkit.read_at(device, 32 * MiB, 4096))
        engine.detach(vol.id)
        self.assertEqual([], writer.verify(self.zvol(vol)))
        return writer.held

    def test_cutover_under_running_writer(self):
        # Never held: its writes in flight wait in the suspended device,
        # as a VM's would.
        self.assertEqual(0, self.cutover_under_running_writer(self.engine))

    def test_cutover_with_quiesce_hook_under_running_writer(self):
        # The optional hook holds the writer around each of the two swaps.
        self.assertEqual(2, self.cutover_under_running_writer(
            labkit.make_engine(quiesce=True)))

    def test_nosync_mode_writes_the_vault_directly(self):
        vol = self.disk()
        n = self.engine.names(vol.id)
        self.engine.attributes.set_volume(n.vault, sync_mode='nosync')
        device = self.engine.attach(vol.id)
        self.assertEqual('direct', self.engine.state(vol.id))
        labkit.write_at(device, 7 * MiB, b'fixed' * 800)
        labkit.run('sync')
        # No replica, no COW: the write is in the vault zvol already.
        self.assertEqual(b'fixed' * 800,
                         labkit.read_at(self.zvol(vol), 7 * MiB, 4000))
        self.assertFalse(self.engine.compute_zfs.exists(n.local))
        self.assertFalse(self.engine.compute_zfs.exists(n.cow))
        self.assertRaises(exception.InvalidInput, self.engine.sync, vol.id)
        self.assertIsNone(self.engine.detach(vol.id))
        self.assertIsNone(self.engine.leases.get(n.vault).owner)
        self.assertEqual('in vault', self.engine.state(vol.id))

    def test_detach_before_seed_keeps_writes(self):
        vol = self.disk()
        device = self.engine.attach(vol.id)
        labkit.write_at(device, 5 * MiB, b'early' * 1000)
        self.engine.detach(vol.id)
        self.assertEqual(b'early' * 1000,
                         labkit.read_at(self.zvol(vol), 5 * MiB, 5000))

    def test_warm_reattach_reuses_replica(self):
        vol = self.disk()
        self.engine.attach(vol.id)
        self.engine.seed(vol.id)
        self.engine.cutover(vol.id)
        self.engine.dm.remove(self.engine.names(vol.id).dm)
        device = self.engine.attach(vol.id)  # same host, replica still here
        self.assertEqual('local', self.engine.state(vol.id))
        self.assertEqual([], labkit.sessions())
        self.assertEqual(labkit.pattern('base', MiB),
                         labkit.read_at(device, 0, MiB))


class LeaseTest(ReplicaTestCase):

    def test_second_host_refused(self):
        vol = self.disk()
        self.engine.attach(vol.id)
        other = labkit.make_engine(host='compute-2')
        before = labkit.leftovers()
        self.assertRaises(leaselib.LeaseHeld, other.attach, vol.id)
        self.assertEqual(before, labkit.leftovers())

    def test_broken_lease_fences_late_sync(self):
        vol = self.disk()
        self.engine.attach(vol.id)
        self.engine.seed(vol.id)
        self.engine.cutover(vol.id)
        self.engine.sync(vol.id)
        dataset = 'vault/' + vol.name
        snaps_before = [s for s in labkit.zvols()
                        if s.startswith(dataset + '@')]
        broken = self.engine.leases.break_lease(dataset)
        self.assertEqual('compute-1', broken.owner)
        # The new owner could be anyone; the old host's sync is refused.
        other = labkit.make_engine(host='compute-2')
        other.leases.acquire(dataset, 'compute-2')
        labkit.write_at(self.engine.names(vol.id).device, 0, b'late' * 1024)
        self.assertRaises(leaselib.Fenced, self.engine.sync, vol.id)
        self.assertEqual(snaps_before, [s for s in labkit.zvols()
                                        if s.startswith(dataset + '@')])
        other.leases.release(dataset, 'compute-2',
                             other.leases.get(dataset).generation)


class TransferTest(ReplicaTestCase):

    def test_cut_stream_resumes_from_token(self):
        vol = self.disk()
        labkit.write_at(self.zvol(vol), 128 * MiB, os.urandom(64 * MiB))
        self.engine.attach(vol.id)

        def cut(done, expected):
            if done > 16 * MiB:
                raise exception.CommandFailed('cut for the test')

        self.assertRaises(exception.CommandFailed, self.engine.seed, vol.id,
                          progress=cut)
        n = self.engine.names(vol.id)
        token = transfer.resume_token(self.engine.compute_zfs, n.local)
        self.assertIsNotNone(token)
        resumed = self.engine.seed(vol.id)
        self.assertGreater(resumed.bytes, 0)
        self.assertIsNone(transfer.resume_token(self.engine.compute_zfs,
                                                n.local))
        self.engine.cutover(vol.id)
        self.assertEqual(labkit.read_at(self.zvol(vol), 128 * MiB, MiB),
                         labkit.read_at(n.device, 128 * MiB, MiB))

    def test_diverged_vault_is_refused_not_rolled_back(self):
        vol = self.disk()
        self.engine.attach(vol.id)
        self.engine.seed(vol.id)
        self.engine.cutover(vol.id)
        # Someone writes the vault copy behind the lease's back.
        labkit.write_at(self.zvol(vol), 0, b'intruder' * 512)
        self.assertRaises(exception.Diverged, self.engine.sync, vol.id)
        self.assertEqual(b'intruder' * 512,
                         labkit.read_at(self.zvol(vol), 0, 4096))

    def test_bad_names_refused_before_any_command(self):
        before = labkit.leftovers()
        for bad in ('not-a-uuid', '../x', '', str(uuid.uuid4()) + ' -rf'):
            self.assertRaises(exception.InvalidInput, self.engine.attach,
                              bad)
        self.assertEqual(before, labkit.leftovers())
