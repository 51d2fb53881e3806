"""The replica engine on real ZFS, LIO, open-iscsi and device-mapper."""

import os
import threading
import uuid

from cinder_zfs_vault.compute_host import service
from cinder_zfs_vault import exception
from cinder_zfs_vault import lease as leaselib
from cinder_zfs_vault import protocol
from cinder_zfs_vault import sync_points
from cinder_zfs_vault import transfer
from tests.functional import base
from tools import labkit

MiB = 1024 * 1024
#: The known content at the start of every test disk.
BASE = 16 * MiB
#: Random data for a transfer that must last a while (a kill, a cut, a
#: break mid-stream): about 10 s of stream between the guests under TCG.
BULK = 48 * MiB


class ReplicaTestCase(base.FunctionalTestCase):

    def setUp(self):
        super(ReplicaTestCase, self).setUp()
        self.engine = labkit.make_engine()
        self.vault = labkit.vault()

    def writer(self, device, seed):
        """A VerifyingWriter (the lab's VM) on ``device``, started."""
        w = labkit.VerifyingWriter(device, blocks=4096, seed=seed)
        self.addCleanup(w.start().stop)
        return w

    def running_agent(self, orch):
        """``zfs-vault-agent`` over ``orch`` (tick 1 s), in a thread.

        :returns: (agent, thread); stopped at cleanup if not before.
        """
        agent = service.Agent(orch, tick=1)
        thread = threading.Thread(target=agent.run, daemon=True)
        thread.start()
        self.addCleanup(thread.join, 300)
        self.addCleanup(agent.stop)
        return agent, thread

    def disk(self, size=1):
        """A vault volume with known content (``BASE`` bytes) at its start."""
        vol = self.volume(size=size)
        self.vault_pattern(vol, 0, 'base', BASE)
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
            self.vault.break_lease(volume_id)
            self.engine.discard_fenced(volume_id)
        for snap in self.vault_lab.zvols():
            if snap.startswith(n.vault + '@'):
                self.vault_lab.run('zfs', 'release', sync_points.HOLD_TAG,
                                   snap, check=False)


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
        lease = self.vault.leases.get('vault/' + vol.name)
        self.assertEqual(second.guid, lease.synced_guid)
        after.stop()
        self.assertGreater(before.writes, 0)
        self.assertGreater(after.writes, 0)
        final = self.engine.detach(vol.id)
        self.assertIsNotNone(final)
        # Every write the VM made is in the vault; the rest is untouched.
        vault = self.zvol(vol)
        self.assertEqual([], self.vault_lab.verify(vault, before.last))
        self.assertEqual([], self.vault_lab.verify(vault, after.last))
        written = set(before.last) | set(after.last)
        data = labkit.pattern('base', BASE)
        for i in range(0, BASE // 4096, 97):
            if i not in written:
                self.assertEqual(data[i * 4096:(i + 1) * 4096],
                                 self.vault_lab.read_at(vault, i * 4096,
                                                        4096))
        lease = self.vault.leases.get('vault/' + vol.name)
        self.assertIsNone(lease.owner)
        self.assertEqual(final.guid, lease.synced_guid)
        self.assertEqual('in vault', self.engine.state(vol.id))

    def test_attach_refused_when_the_cow_cannot_be_reserved(self):
        """Issue 21, 5: never a COW zvol that can meet ENOSPC.

        A disk larger than the compute pool's free space: its COW zvol
        was sparse, the attach succeeded, and once the VM's writes filled
        the pool the kernel would invalidate the dm snapshot (every write
        since attach lost). Now its room is reserved, or the attach is
        refused with nothing left on either host.
        """
        free = int(labkit.run('zfs', 'get', '-Hp', '-o', 'value',
                              'available', 'compute'))
        size = free // 1024 ** 3 + 2
        vol = self.volume(size=size)
        before = labkit.leftovers()
        error = self.assertRaises(exception.OutOfSpace, self.engine.attach,
                                  vol.id)
        self.assertIn('out of space', str(error))
        self.assertEqual(before, labkit.leftovers())
        self.assertEqual('in vault', self.engine.state(vol.id))
        self.assertIsNone(self.vault.leases.get('vault/' + vol.name).owner)

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
        self.assertEqual([], self.vault_verify(vol, writer))
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
        self.vault.attributes.set_volume(n.vault, sync_mode='nosync')
        device = self.engine.attach(vol.id)
        self.assertEqual('direct', self.engine.state(vol.id))
        labkit.write_at(device, 7 * MiB, b'fixed' * 800)
        labkit.run('sync')
        # No replica, no COW: the write is in the vault zvol already.
        self.assertEqual(b'fixed' * 800,
                         self.vault_read(vol, 7 * MiB, 4000))
        self.assertFalse(self.engine.compute_zfs.exists(n.local))
        self.assertFalse(self.engine.compute_zfs.exists(n.cow))
        self.assertRaises(exception.InvalidInput, self.engine.sync, vol.id)
        self.assertIsNone(self.engine.detach(vol.id))
        self.assertIsNone(self.vault.leases.get(n.vault).owner)
        self.assertEqual('in vault', self.engine.state(vol.id))

    def test_detach_before_seed_keeps_writes(self):
        vol = self.disk()
        device = self.engine.attach(vol.id)
        labkit.write_at(device, 5 * MiB, b'early' * 1000)
        self.engine.detach(vol.id)
        self.assertEqual(b'early' * 1000,
                         self.vault_read(vol, 5 * MiB, 5000))

    def test_detach_after_a_seed_that_recorded_no_generation(self):
        # The receive committed, the seed did not record the lease
        # generation on the replica (its pipe failed at the end, or a kill;
        # lab 2026-12-06): the cut-over keeps the COW zvol's before the COW
        # goes, so the final sync is not refused as fenced.
        vol = self.disk()
        device = self.engine.attach(vol.id)
        labkit.write_at(device, 5 * MiB, b'late' * 1000)
        self.engine.seed(vol.id)
        labkit.run('zfs', 'inherit', leaselib.GENERATION,
                   self.engine.names(vol.id).local)
        self.engine.detach(vol.id)
        self.assertEqual(b'late' * 1000, self.vault_read(vol, 5 * MiB, 4000))
        self.assertEqual('in vault', self.engine.state(vol.id))

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

    def local_disk(self):
        vol = self.disk()
        self.engine.attach(vol.id)
        self.engine.seed(vol.id)
        self.engine.cutover(vol.id)
        self.engine.sync(vol.id)
        return vol

    def vault_state(self, vol):
        """What a fenced sync must not change: snapshots, data, token."""
        dataset = 'vault/' + vol.name
        return ([s for s in self.vault_lab.zvols()
                 if s.startswith(dataset + '@')],
                self.vault_read(vol, 0, 4 * MiB),
                self.vault_lab.resume_token_of(dataset))

    def test_broken_lease_fences_late_sync(self):
        vol = self.local_disk()
        before = self.vault_state(vol)
        broken = self.vault.break_lease(vol.id)
        self.assertEqual('compute-1', broken.owner)
        # The new owner could be anyone; the old host's sync is refused.
        other = labkit.make_engine(host='compute-2')
        other.vault.lease(vol.id)
        labkit.write_at(self.engine.names(vol.id).device, 0, b'late' * 1024)
        self.assertRaises(leaselib.Fenced, self.engine.sync, vol.id)
        self.assertEqual(before, self.vault_state(vol))
        other.vault.release(vol.id, other.vault.info(vol.id)['lease'][
            'generation'])

    def test_break_while_sync_stream_in_flight(self):
        """The vault refuses a sync whose stream a break overtakes."""
        vol = self.local_disk()
        before = self.vault_state(vol)
        labkit.write_at(self.engine.names(vol.id).device, 128 * MiB,
                        os.urandom(BULK))
        broke = threading.Event()

        def break_mid_stream(done, expected):
            if done > 8 * MiB and not broke.is_set():
                broke.set()
                self.vault.break_lease(vol.id)  # on the vault, as an operator

        self.assertRaises(leaselib.Fenced, self.engine.sync, vol.id,
                          rate=4 * MiB, progress=break_mid_stream)
        self.assertTrue(broke.is_set())
        # Exactly as it was: no new snapshot, same data, no partial state.
        self.assertEqual(before, self.vault_state(vol))

    def test_fenced_host_cannot_attach_again(self):
        vol = self.local_disk()
        self.vault.break_lease(vol.id)
        before = labkit.leftovers()
        self.assertRaises(leaselib.Fenced, self.engine.attach, vol.id)
        self.assertEqual(before, labkit.leftovers())
        self.assertIsNone(self.vault.leases.get('vault/' + vol.name).owner)
        # An operator allows it back: its stale replica is still refused.
        self.vault.allow(vol.id, 'compute-1')
        self.assertRaises(leaselib.Fenced, self.engine.attach, vol.id)
        self.assertIsNone(self.vault.leases.get('vault/' + vol.name).owner)
        self.engine.discard_fenced(vol.id)
        self.assertEqual('/dev/mapper/zvault-' + vol.id,
                         self.engine.attach(vol.id))

    def test_break_cuts_a_nosync_session(self):
        """A non-sync host writes the vault over iSCSI: a break cuts it."""
        vol = self.disk()
        n = self.engine.names(vol.id)
        self.vault.attributes.set_volume(n.vault, sync_mode='nosync')
        device = self.engine.attach(vol.id)
        self.assertEqual('direct', self.engine.state(vol.id))
        write = ['dd', 'of=' + device, 'bs=4096', 'count=1', 'oflag=direct',
                 'conv=notrunc', 'status=none']
        labkit.run(*write, 'seek=%d' % (7 * MiB // 4096), 'if=/dev/zero')
        self.assertEqual(b'\0' * 4096, self.vault_read(vol, 7 * MiB, 4096))
        # Fail its I/O in seconds once the target is gone, not open-iscsi's
        # 120 (the session's recovery timeout, a test-side setting).
        labkit.set_recovery_timeout(protocol.origin_iqn(n.name), 5)
        self.vault.break_lease(vol.id)
        iqn = protocol.origin_iqn(n.name)
        self.assertNotIn(iqn, self.vault_lab.leftovers()['targets'])
        # The fenced host's next write does not reach the vault zvol.
        labkit.run(*write, 'seek=%d' % (9 * MiB // 4096), 'if=/dev/urandom',
                   check=False, timeout=180)
        base = labkit.pattern('base', BASE)
        self.assertEqual(base[9 * MiB:9 * MiB + 4096],
                         self.vault_read(vol, 9 * MiB, 4096))

    def test_two_hosts_attach_at_once(self):
        vol = self.disk()
        engines = {'compute-1': self.engine,
                   'compute-2': labkit.make_engine(host='compute-2')}
        outcome = {}

        def attach(host):
            try:
                outcome[host] = engines[host].attach(vol.id)
            except Exception as e:
                outcome[host] = e

        labkit.run_all(attach, [(h,) for h in engines], timeout=300)
        won = [h for h, r in outcome.items() if isinstance(r, str)]
        self.assertEqual(1, len(won), outcome)
        lost, = set(engines) - set(won)
        self.assertIsInstance(outcome[lost], leaselib.LeaseHeld)
        lease = self.vault.leases.get('vault/' + vol.name)
        self.assertEqual((won[0], 1), (lease.owner, lease.generation))
        # The winner's origin export and session are intact: it reads.
        self.assertEqual(labkit.pattern('base', MiB),
                         labkit.read_at(outcome[won[0]], 0, MiB))
        engines[won[0]].detach(vol.id)

    def test_host_refused_what_it_does_not_lease(self):
        vol = self.disk()
        self.engine.attach(vol.id)
        other = labkit.make_engine(host='compute-2')
        gen = self.vault.leases.get('vault/' + vol.name).generation
        before = labkit.leftovers()
        self.assertRaises(protocol.NotYours, other.vault.info, vol.id)
        for call in (lambda: other.vault.export(vol.id, gen),
                     lambda: other.vault.seed(vol.id, gen),
                     lambda: other.vault.release(vol.id, gen)):
            self.assertRaises(leaselib.Fenced, call)
        self.assertEqual(before, labkit.leftovers())


class TransferTest(ReplicaTestCase):

    def test_cut_stream_resumes_from_token(self):
        vol = self.disk()
        self.vault_random(vol, 128 * MiB, BULK)
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
        self.assertEqual(self.vault_read(vol, 128 * MiB, MiB),
                         labkit.read_at(n.device, 128 * MiB, MiB))

    def test_diverged_vault_is_refused_not_rolled_back(self):
        vol = self.disk()
        self.engine.attach(vol.id)
        self.engine.seed(vol.id)
        self.engine.cutover(vol.id)
        # Someone writes the vault copy behind the lease's back.
        self.vault_write(vol, 0, b'intruder' * 512)
        self.assertRaises(exception.Diverged, self.engine.sync, vol.id)
        self.assertEqual(b'intruder' * 512,
                         self.vault_read(vol, 0, 4096))

    def wait_for_rewrite(self, run, written):
        """Wait until ``written()`` after an import of a pool.

        The rewrite comes with the zvol's device, in a txg after the
        import's. ``run`` runs a command where the pool is.
        """
        def check():
            run('zpool', 'sync')
            return written()
        self.wait_for(check, 60, 'rewrite of the objset after the import')

    def test_pools_imported_again_between_syncs(self):
        """A reboot's import of a pool is not a divergence.

        An import rewrites the objset block of each zvol whose ZIL was
        used (a write through its device): ``written`` reads 8192 bytes
        with no data changed. Before issue 8's fix the first
        sync after the vault's import and the retire after the compute
        host's were both refused (Diverged), and a disk stayed out for
        good after any reboot. A real write is still refused: the test
        above.
        """
        vol = self.disk()
        self.engine.attach(vol.id)
        self.engine.seed(vol.id)
        self.engine.cutover(vol.id)
        n = self.engine.names(vol.id)
        labkit.write_at(n.device, 0, labkit.pattern('before', MiB))
        # Before the first sync: the vault zvol was last written through
        # its device (its ZIL used), as by Cinder's copy of an image; a
        # received stream would have zeroed its ZIL header.
        self.vault_lab.run('zpool', 'export', 'vault')
        self.vault_lab.run('zpool', 'import', 'vault')
        self.wait_for_rewrite(self.vault_lab.run,
                              lambda: self.prop(n.vault, 'written') != '0')
        labkit.write_at(n.device, MiB, labkit.pattern('after', MiB))
        self.engine.sync(vol.id)
        self.assertTrue(self.engine.unmap(vol.id))
        final = self.engine.sync(vol.id, rate=0)
        labkit.run('zpool', 'export', 'compute')
        labkit.run('zpool', 'import', 'compute')
        self.wait_for_rewrite(labkit.run,
                              lambda: self.engine.unsynced_bytes(vol.id))
        self.engine.retire(vol.id, final.snapshot)
        self.assertFalse(self.engine.compute_zfs.exists(n.local))
        self.assertEqual(labkit.pattern('before', MiB) +
                         labkit.pattern('after', MiB),
                         self.vault_read(vol, 0, 2 * MiB))

    def test_bad_names_refused_before_any_command(self):
        before = labkit.leftovers()
        for bad in ('not-a-uuid', '../x', '', str(uuid.uuid4()) + ' -rf'):
            self.assertRaises(exception.InvalidInput, self.engine.attach,
                              bad)
        self.assertEqual(before, labkit.leftovers())


class FullPoolTest(ReplicaTestCase):
    """A pool fills: a clear error, nothing half made, the VM's device on.

    Then room is made and the same call succeeds (issue 8, full pool).
    """

    def fill(self, run, pool, leave):
        """Reserve all but ``leave`` bytes of ``pool`` (a filler zvol)."""
        free = int(run('zfs', 'get', '-Hp', '-o', 'value', 'available',
                       pool).strip())
        run('zfs', 'create', '-s', '-V', '1G', pool + '/filler')
        self.addCleanup(run, 'zfs', 'destroy', pool + '/filler', check=False)
        run('zfs', 'set', 'refreservation=%d' % (free - leave),
            pool + '/filler')

    def still_writes(self, writer):
        writer.wait_writes(writer.writes + 20, timeout=60)

    def test_full_pools_refuse_then_succeed(self):
        """The compute pool full at the seed, then the vault's at a sync."""
        vol = self.disk()
        self.vault_random(vol, 128 * MiB, BULK)
        device = self.engine.attach(vol.id)
        writer = self.writer(device, seed=7)
        # Room for the VM's writes into its COW zvol, not for the seed.
        self.fill(labkit.run, 'compute', 48 * MiB)
        self.assertRaises(exception.OutOfSpace, self.engine.seed, vol.id)
        n = self.engine.names(vol.id)
        self.assertFalse(self.engine.compute_zfs.exists(n.local))
        self.assertEqual('seeding', self.engine.state(vol.id))
        self.still_writes(writer)
        labkit.run('zfs', 'destroy', 'compute/filler')
        self.engine.seed(vol.id)
        self.engine.cutover(vol.id)
        # Now the vault's pool, with more to sync than it has room for.
        bulk = os.urandom(BULK)
        labkit.write_at(device, 192 * MiB, bulk)
        synced = self.vault.leases.get(n.vault).synced_guid
        self.fill(self.vault_lab.run, 'vault', 16 * MiB)
        self.assertRaises(exception.OutOfSpace, self.engine.sync, vol.id)
        self.assertEqual(synced, self.vault.leases.get(n.vault).synced_guid)
        self.still_writes(writer)  # on its local replica
        self.vault_lab.run('zfs', 'destroy', 'vault/filler')
        self.engine.sync(vol.id)
        writer.stop()
        self.engine.detach(vol.id)
        self.assertEqual([], self.vault_verify(vol, writer))
        self.assertEqual(labkit.digest(bulk), self.vault_lab.digest(
            self.zvol(vol), 192 * MiB, BULK))
