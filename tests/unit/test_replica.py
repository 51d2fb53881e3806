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

"""The replica engine's decisions over a recorded executor and a fake vault.

The data path is proven in the lab (tests/functional/hosts); here, what the
engine must refuse or never do, whatever the vault answers.
"""

import fixtures
import testtools

from cinder_zfs_vault.compute_host import dm
from cinder_zfs_vault.compute_host import dm as dmlib
from cinder_zfs_vault.compute_host.phases import attach as attach_phase
from cinder_zfs_vault.compute_host import replica
from cinder_zfs_vault import exception
from cinder_zfs_vault import lease as leaselib
from cinder_zfs_vault import protocol
from cinder_zfs_vault import transfer
from cinder_zfs_vault import zfs
from tests.unit import fake_dm
from tests.unit.fake_executor import failure
from tests.unit.fake_executor import RecordingExecutor
from tests.unit import fake_zfs

VID = '0c3d8d55-2aa7-4dc0-9e6c-8e2f2b1e2b11'
LOCAL = 'compute/volume-' + VID
GiB = 1024 ** 3
MiB = 1024 ** 2
NOT_FOUND = failure("cannot open 'x': dataset does not exist")


class FakeVault(object):
    """A VaultClient's answers, recorded."""

    def __init__(self, generation, taken=True):
        self.generation = generation
        self.taken = taken
        self.calls = []

    def lease(self, volume_id):
        self.calls.append(('lease', volume_id))
        return {'generation': self.generation, 'sync_mode': 'sync',
                'volsize': GiB, 'taken': self.taken}

    def release(self, volume_id, generation):
        self.calls.append(('release', volume_id, generation))

    def export(self, volume_id, generation):
        self.calls.append(('export', volume_id, generation))
        return {'target_iqn': 'iqn.x:volume-' + volume_id}

    def unexport(self, volume_id, generation):
        self.calls.append(('unexport', volume_id, generation))


class FakeConnector(object):

    def __init__(self):
        self.calls = []

    def connect_volume(self, props):
        self.calls.append('connect')
        return {'path': '/dev/sdz'}

    def disconnect_volume(self, props, info, force=False,
                          ignore_errors=False):
        self.calls.append('disconnect')

    def info(self, volume_id):
        raise protocol.NotYours('not leased to compute-1')


class EngineTest(testtools.TestCase):

    def setUp(self):
        super(EngineTest, self).setUp()
        self.execute = RecordingExecutor()
        self.execute.on('zfs', 'get', out=NOT_FOUND)
        self.execute.on('dmsetup', 'info', out=failure('Device does not '
                                                       'exist.'))

    def engine(self, vault):
        self.connector = FakeConnector()
        return replica.ReplicaEngine(
            vault, zfs.ZFS(self.execute), dm.DeviceMapper(self.execute),
            self.connector, 'compute-1', '192.0.2.10:3260', 'vault',
            'compute')

    def device_fails(self):
        """The VM's device cannot be made (dmsetup create fails)."""
        self.useFixture(fixtures.MockPatchObject(
            zfs, 'wait_for_zvol', side_effect=lambda path, t: path))
        self.execute.on('dmsetup', 'info', '-c', '--noheadings',
                        '--separator', ':', out='253:7\n')
        self.execute.on('dmsetup', 'create', 'zvault-' + VID,
                        out=failure('device-mapper: create ioctl failed'))

    def test_failed_remap_keeps_the_cow_zvol_and_its_writes(self):
        # After a reboot the COW zvol (generation 6, the lease's) holds
        # every VM write since attach; mapping it again fails.
        self.execute.on('zfs', 'get', '-Hp', '-o', 'property,value',
                        leaselib.GENERATION, LOCAL + '-cow',
                        out='%s\t6\n' % leaselib.GENERATION)
        self.execute.on('zfs', 'get', '-Hp', '-o', 'property,value', 'type',
                        LOCAL + '-cow', out='type\tvolume\n')
        self.device_fails()
        vault = FakeVault(generation=6, taken=False)
        self.assertRaises(exception.CommandFailed, self.engine(vault).attach,
                          VID)
        self.assertEqual([], self.execute.commands('zfs', 'destroy'))
        self.assertEqual([], self.execute.commands('zfs', 'create'))
        # The lease was this host's already: it keeps it for the retry.
        self.assertNotIn('release', [c[0] for c in vault.calls])

    def test_failed_first_attach_leaves_nothing(self):
        self.device_fails()
        vault = FakeVault(generation=1, taken=True)
        self.assertRaises(exception.CommandFailed, self.engine(vault).attach,
                          VID)
        self.assertEqual([('zfs', 'destroy', LOCAL + '-cow')],
                         self.execute.commands('zfs', 'destroy'))
        self.assertEqual([('dmsetup', 'remove', 'zvault-%s-snap' % VID)],
                         self.execute.commands('dmsetup', 'remove'))
        self.assertEqual(['connect', 'disconnect'], self.connector.calls)
        self.assertEqual([('lease', VID), ('export', VID, 1),
                          ('unexport', VID, 1), ('release', VID, 1)],
                         vault.calls)

    def test_cow_zvol_is_reserved_or_the_attach_refused(self):
        # Issue 21, 5: a sparse COW zvol on a full pool meets ENOSPC and
        # the kernel invalidates the dm snapshot: every write since attach
        # lost. It is made thick (no -s), and a pool without the room
        # refuses the attach with nothing left.
        self.useFixture(fixtures.MockPatchObject(
            zfs, 'wait_for_zvol', side_effect=lambda path, t: path))
        self.execute.on('zfs', 'create', out=failure(
            "cannot create '%s-cow': out of space" % LOCAL))
        vault = FakeVault(generation=1, taken=True)
        self.assertRaises(exception.OutOfSpace, self.engine(vault).attach,
                          VID)
        [create] = self.execute.commands('zfs', 'create')
        self.assertNotIn('-s', create)
        self.assertEqual(('-V', str(attach_phase.cow_size(GiB)),
                          LOCAL + '-cow'), create[-3:])
        self.assertEqual([], self.execute.commands('dmsetup', 'create'))
        self.assertEqual(['connect', 'disconnect'], self.connector.calls)
        self.assertEqual([('lease', VID), ('export', VID, 1),
                          ('unexport', VID, 1), ('release', VID, 1)],
                         vault.calls)

    def test_failed_login_logs_out_before_the_export_goes(self):
        # os-brick logged in, then found no device in time: its session
        # must not outlive the export (issue 8, defect 7).
        vault = FakeVault(generation=1, taken=True)
        engine = self.engine(vault)

        def connect(props):
            self.connector.calls.append('connect')
            raise RuntimeError('no device for iqn.x:volume-%s' % VID)
        self.connector.connect_volume = connect
        self.assertRaises(RuntimeError, engine.attach, VID)
        self.assertEqual(['connect', 'disconnect'], self.connector.calls)
        self.assertEqual([('lease', VID), ('export', VID, 1),
                          ('unexport', VID, 1), ('release', VID, 1)],
                         vault.calls)
        self.assertEqual([], self.execute.commands('zfs', 'create'))

    def origin_flush_fails(self, owner):
        """os-brick logged out but could not flush; the vault's lease."""
        vault = FakeVault(generation=3)
        vault.info = lambda volume_id: {'lease': {'owner': owner,
                                                  'generation': 3}}
        engine = self.engine(vault)

        def disconnect(props, info, force=False):
            self.connector.calls.append('disconnect')
            raise RuntimeError('blockdev --flushbufs: No such device')
        self.connector.disconnect_volume = disconnect
        return engine, vault

    def test_fenced_host_leaves_a_revoked_origin(self):
        # A break removed the export: the flush cannot succeed, and the
        # fenced host still tidies up (nothing of it is in the vault).
        engine, vault = self.origin_flush_fails(owner=None)
        engine.discard_fenced(VID)
        self.assertEqual(['disconnect'], self.connector.calls)
        self.assertNotIn('unexport', [c[0] for c in vault.calls])

    def test_failed_flush_of_a_disk_still_ours_raises(self):
        # Non-sync mode: the flush may hold the VM's writes.
        engine, vault = self.origin_flush_fails(owner='compute-1')
        self.assertRaises(RuntimeError, engine._disconnect_origin,
                          engine.names(VID))
        self.assertNotIn('unexport', [c[0] for c in vault.calls])

    def replica_of_generation(self, generation):
        self.execute.on('zfs', 'get', '-Hp', '-o', 'property,value',
                        leaselib.GENERATION, LOCAL,
                        out='%s\t%d\n' % (leaselib.GENERATION, generation))

    def test_fenced_replica_refused_not_restamped(self):
        # A replica left from generation 4; the vault now leases 6 (a
        # break, then an operator allowed this host back).
        self.replica_of_generation(4)
        vault = FakeVault(generation=6)
        self.assertRaises(leaselib.Fenced, self.engine(vault).attach, VID)
        # Never stamped with the new generation, nothing mapped, and the
        # lease just taken is given back.
        self.assertEqual([], self.execute.commands('zfs', 'set'))
        self.assertEqual([], self.execute.commands('dmsetup', 'create'))
        self.assertEqual([('lease', VID), ('release', VID, 6)], vault.calls)

    def test_reattach_under_the_same_lease_is_warm(self):
        self.replica_of_generation(6)
        self.execute.on('dmsetup', 'info', 'zvault-' + VID, out='')
        engine = self.engine(FakeVault(generation=6))
        self.assertEqual('/dev/mapper/zvault-' + VID, engine.attach(VID))
        self.assertEqual([], self.execute.commands('zfs', 'set'))


class ComputeZFS(fake_zfs.FakeZFS):
    """The compute pool: zvols made and destroyed, in the shared journal."""

    def __init__(self, journal):
        super(ComputeZFS, self).__init__()
        self.journal = journal

    def create_volume(self, name, size, sparse=False, properties=None):
        self.create(name, volsize=size)
        self.props[name].update(properties or {})

    def stream_argv(self, argv):
        return list(argv)

    def destroy(self, name, recursive=False):
        if '@' in name:
            return super(ComputeZFS, self).destroy(name)
        self._props_of(name)
        self.journal.append(('zfs destroy', name))
        del self.props[name], self.snaps[name]


class FakeHostTestCase(testtools.TestCase):
    """An engine over a fake compute pool and device-mapper, one journal."""

    def setUp(self):
        super(FakeHostTestCase, self).setUp()
        self.useFixture(fixtures.MockPatchObject(
            zfs, 'wait_for_zvol', side_effect=lambda path, t: path))
        self.journal = []
        self.zfs = ComputeZFS(self.journal)
        self.dm = fake_dm.FakeDM(self.journal)
        self.vault = FakeVault(generation=6, taken=False)
        self.vault.info = lambda volume_id: {'lease': {
            'owner': 'compute-1', 'generation': 6}}
        self.connector = FakeConnector()
        self.engine = replica.ReplicaEngine(
            self.vault, self.zfs, self.dm, self.connector, 'compute-1',
            '192.0.2.10:3260', 'vault', 'compute')
        self.n = self.engine.names(VID)

    def seeded_with_cow(self):
        """Attached, seeded: the replica and the COW of generation 6."""
        self.zfs.create(self.n.local, volsize=GiB)
        self.zfs.snapshot(self.n.local + '@zv-1-0123abcd')
        self.zfs.set(self.n.local, {leaselib.GENERATION: 6})
        self.zfs.create_volume(self.n.cow, GiB,
                               properties={leaselib.GENERATION: '6'})


class RebootTest(FakeHostTestCase):
    """A compute host lost its devices (a power cut) between seed and end.

    The COW zvol holds every VM write since attach; during the cut-over's
    merge, part of them is in the replica only. Whatever the engine is
    asked next must map them again, as a merge, never drop them.
    """

    def assert_merged_before_the_cow_went(self):
        merge = dmlib.merge_table(dmlib.sectors(GiB),
                                  self.n.zvol(self.n.local),
                                  self.n.zvol(self.n.cow))
        events = [e[:2] for e in self.journal]
        self.assertIn(('dm create', self.n.dm_merge, merge), self.journal)
        self.assertLess(events.index(('dm merged', self.n.dm_merge)),
                        events.index(('zfs destroy', self.n.cow)))
        # Never the origin with the COW: merged chunks are not in the COW.
        self.assertNotIn('connect', self.connector.calls)

    def test_cutover_after_a_reboot_merges_the_cow(self):
        # A seed flow resumed by the agent after a power cut: its cut-over
        # found no device and destroyed the COW zvol, unmerged.
        self.seeded_with_cow()
        self.assertIsNone(self.engine.mapping(VID))
        self.engine.cutover(VID)
        self.assert_merged_before_the_cow_went()
        self.assertEqual('local', self.engine.mapping(VID))

    def test_reconcile_after_a_reboot_maps_a_merge_not_the_origin(self):
        # The cut-over had begun merging when the power went.
        self.seeded_with_cow()
        self.assertEqual(('device mapped again over its COW zvol', 'seed'),
                         self.engine.reconcile(VID))
        self.assertEqual('merge', self.engine.mapping(VID))
        self.assertEqual([], self.connector.calls)
        self.assertEqual([], [c for c in self.vault.calls
                              if c[0] == 'export'])
        self.engine.cutover(VID)  # the seed flow reconcile asks for
        self.assert_merged_before_the_cow_went()
        self.assertEqual('local', self.engine.mapping(VID))

    def test_unmap_after_a_reboot_merges_first(self):
        self.seeded_with_cow()
        self.assertTrue(self.engine.unmap(VID))
        self.assert_merged_before_the_cow_went()
        self.assertFalse(self.dm.exists(self.n.dm))

    def test_discard_refused_while_ours_even_with_no_generation(self):
        # A crash between the seed's receive and recording the generation:
        # nothing says which lease the replica is of, but the vault says
        # the disk is this host's, so its writes are not lost yet (issue 8,
        # defect 4: the check was skipped and the replica destroyed).
        self.zfs.create(self.n.local, volsize=GiB)
        self.zfs.snapshot(self.n.local + '@zv-1-0123abcd')
        self.assertRaises(exception.InvalidInput, self.engine.discard_fenced,
                          VID)
        self.assertEqual([], self.journal)
        self.assertTrue(self.zfs.exists(self.n.local))


class SeedingTestCase(FakeHostTestCase):
    """Attached (a COW zvol of generation 6), a vault ready to send."""

    seed_bytes = 500 * MiB

    def setUp(self):
        super(SeedingTestCase, self).setUp()
        self.zfs.create('compute')
        self.zfs.create_volume(self.n.cow, GiB,
                               properties={leaselib.GENERATION: '6'})
        self.vault.seed = lambda vid, gen: {
            'snap': 'zv-1-0123abcd', 'guid': '77', 'bytes': self.seed_bytes}
        self.vault.send_argv = lambda *a, **k: ['zfs-vault-endpoint', 'send']


class FullComputePoolTest(SeedingTestCase):
    """Issue 8, full pool: a seed the compute pool has no room for."""

    def setUp(self):
        super(FullComputePoolTest, self).setUp()
        self.piped = []

        def pipe(send, recv, **kwargs):
            self.piped.append(send)
            raise exception.OutOfSpace('cannot receive new filesystem '
                                       'stream: out of space')
        self.useFixture(fixtures.MockPatchObject(
            replica.seed.vault_client, 'pipe', side_effect=pipe))

    def test_refused_before_a_byte_moves(self):
        self.zfs.props['compute']['available'] = str(400 * MiB)
        e = self.assertRaises(exception.OutOfSpace, self.engine.seed, VID)
        self.assertIn('needs', str(e))
        self.assertEqual([], self.piped)
        self.assertFalse(self.zfs.exists(self.n.local))

    def test_seeds_at_once_count_each_others_room(self):
        # Issue 21, 5: two seeds checked 'available' at once and each
        # found the room the other was about to take.
        self.zfs.props['compute']['available'] = str(900 * MiB)
        other = '7f2c1a90-5b1e-4f7a-9d0e-3c2b1a4d5e6f'
        with self.engine.seed_room.held(other, 900 * MiB, 500 * MiB, None):
            e = self.assertRaises(exception.OutOfSpace, self.engine.seed,
                                  VID)
            self.assertIn('beside the seeds in flight', str(e))
        self.assertEqual([], self.piped)
        # Once the other's seed is done, this one's room is there.
        self.assertRaises(exception.OutOfSpace, self.engine.seed, VID,
                          rate=0)
        self.assertEqual(1, len(self.piped))

    def test_pool_full_mid_stream_gives_the_room_back(self):
        # The partial receive would hold the space the VM's COW zvol
        # needs for its next writes.
        self.zfs.props['compute']['available'] = str(8 * GiB)
        self.assertRaises(exception.OutOfSpace, self.engine.seed, VID,
                          rate=0)
        self.assertEqual(1, len(self.piped))
        self.assertIn(('abort_receive', self.n.local), self.zfs.calls)


class ImportRewriteTest(FakeHostTestCase):
    """Issue 8: syncs and retires after a reboot of either host.

    Importing a pool rewrites each zvol's objset block: ``written`` reads
    8192 bytes though no data changed (measured, OpenZFS 2.1.11). A real
    write to the vault zvol is refused by ``zfs recv`` itself (the lab's
    test_diverged_vault_is_refused_not_rolled_back).
    """

    def setUp(self):
        super(ImportRewriteTest, self).setUp()
        self.zfs.create(self.n.local, volsize=GiB)
        self.zfs.set(self.n.local, {leaselib.GENERATION: 6})
        self.zfs.snapshot(self.n.local + '@zv-1-0123abcd')
        self.zfs.hold(self.n.local + '@zv-1-0123abcd', 'zfsvault')
        self.zfs.send_size = lambda argv: 4096
        self.vault_snaps = [self.zfs.snapshots(self.n.local)[0]]
        self.vault.receive_argv = (
            lambda *a, **kw: ['zfs-vault-endpoint', 'recv'])
        self.vault.info = lambda volume_id: {
            'lease': {'owner': 'compute-1', 'generation': 6},
            'snapshots': list(self.vault_snaps), 'resume_token': None,
            'upload_rate': 0,
            # What the vault answered before it left this to zfs recv:
            # its zvol's objset block rewritten by its pool's import.
            'written': self.vault_written}
        self.vault_written = 8192
        self.vault.confirm = lambda vid, gen, snap, guid: (
            self.vault.calls.append(('confirm', snap, guid)))
        self.piped = []

        def pipe(send, recv, **kwargs):
            self.piped.append(send)
            # The vault lands the stream: it now has the newest snapshot.
            self.vault_snaps.append(self.zfs.snapshots(self.n.local)[-1])
            return transfer.Result(bytes=4096, seconds=1.0)
        self.useFixture(fixtures.MockPatchObject(
            replica.sync.vault_client, 'pipe', side_effect=pipe))

    def test_sync_after_a_reboot_of_the_vault_is_sent(self):
        result = self.engine.sync(VID)
        self.assertEqual(1, len(self.piped))
        self.assertIn('-I', self.piped[0])
        self.assertEqual(self.vault_snaps[-1]['guid'], result.guid)

    def final_sync_then_written(self, nbytes):
        self.vault_written = 0  # the compute host rebooted, not the vault
        final = self.engine.sync(VID, rate=0)
        self.zfs.props[self.n.local]['written@' + final.snapshot.split(
            '@')[1]] = str(nbytes)
        return final

    def test_retire_refused_while_a_device_writes_the_replica(self):
        final = self.final_sync_then_written(4096)
        self.dm.create(self.n.dm, 'linear')
        self.assertRaises(exception.Diverged, self.engine.retire, VID,
                          final.snapshot)
        self.assertEqual(1, len(self.piped))
        self.assertTrue(self.zfs.exists(self.n.local))

    def test_retire_after_a_reboot_syncs_once_more(self):
        # Between the final sync and the retire: its pool imported.
        final = self.final_sync_then_written(8192)
        self.engine.retire(VID, final.snapshot)
        self.assertEqual(2, len(self.piped))
        newest = self.vault_snaps[-1]
        self.assertIn(('confirm', newest['snap'], newest['guid']),
                      self.vault.calls)
        self.assertFalse(self.zfs.exists(self.n.local))
        self.assertIn(('release', VID, 6), self.vault.calls)


class WaitedOnSeedTest(SeedingTestCase):
    """A caller that waits on a seed: a snapshot of the attached volume.

    Issue 9: the agent refused a sync point of a disk still seeding, or
    its call timed out behind a seed paced by ``download_rate``; now the
    seed goes on unthrottled and the disk is cut over first.
    """

    seed_bytes = 64 * MiB

    def setUp(self):
        super(WaitedOnSeedTest, self).setUp()
        self.zfs.props['compute']['available'] = str(8 * GiB)
        self.engine.settings = self.engine.settings._replace(
            download_rate=MiB)

    def seed_seeing_rates(self, during=None):
        """Seed with a stream that records its throttle's rate.

        ``during()``: a context entered in the middle of the stream (as
        another thread's request would).
        """
        rates = []

        def pipe(send, recv, rate, **kwargs):
            rates.append(rate.rate)
            if during:
                with during():
                    rates.append(rate.rate)
            rates.append(rate.rate)
            raise exception.CommandFailed('cut')
        self.useFixture(fixtures.MockPatchObject(
            replica.seed.vault_client, 'pipe', side_effect=pipe))
        self.assertRaises(exception.CommandFailed, self.engine.seed, VID)
        return rates

    def test_a_seed_is_paced_by_its_download_rate(self):
        self.assertEqual([MiB, MiB], self.seed_seeing_rates())

    def test_a_seed_in_flight_goes_unthrottled_once_a_caller_waits(self):
        self.assertEqual([MiB, None, None], self.seed_seeing_rates(
            lambda: self.engine.urgency.waiting(VID)))

    def test_a_seed_begun_while_a_caller_waits_is_unthrottled(self):
        with self.engine.urgency.waiting(VID):
            with self.engine.urgency.waiting(VID):
                pass  # one of two callers done: the other still waits
            self.assertEqual([None, None], self.seed_seeing_rates())
        with self.engine.urgency.stream(VID, MiB) as throttle:
            self.assertEqual(MiB, throttle.rate)  # nobody waits any more

    def test_complete_seeds_unthrottled_and_cuts_over_a_disk_on_origin(self):
        calls = []
        self.engine.seed = lambda vid, rate=None, progress=None: \
            calls.append(('seed', vid, rate))
        self.engine.cutover = lambda vid: calls.append(('cutover', vid))
        for mapping, expected in (('snapshot', True), ('merge', True),
                                  ('local', False), ('vault', False),
                                  (None, False)):
            self.engine.mapping = lambda vid: mapping
            self.assertEqual(expected, self.engine.complete(VID))
        self.assertEqual([('seed', VID, 0), ('cutover', VID)] * 2, calls)


class GenerationKeptTest(FakeHostTestCase):

    def test_cutover_keeps_the_generation_the_seed_did_not_record(self):
        # The receive committed, the seed failed before recording the
        # generation (lab 2026-12-06): the COW zvol holds the only record.
        self.seeded_with_cow()
        self.zfs.set(self.n.local, {leaselib.GENERATION: '-'})
        self.engine.cutover(VID)
        self.assertFalse(self.zfs.exists(self.n.cow))
        self.assertEqual(6, self.engine._generation(self.n))
