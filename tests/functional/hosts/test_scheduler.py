"""The sync scheduler over real replicas, across hosts."""

import threading
import time

from cinder_zfs_vault import attributes
from cinder_zfs_vault.compute_host import scheduler
from cinder_zfs_vault import sync_points
from tests.functional.hosts import test_replica
from tools import labkit

MiB = 1024 * 1024
NS = attributes.NS


class SchedulerTest(test_replica.ReplicaTestCase):

    def setUp(self):
        super(SchedulerTest, self).setUp()
        # The operator's attributes, on the vault; the scheduler under test
        # reads them through this host's endpoint (engine.attributes).
        self.attrs = self.vault.attributes
        self.addCleanup(self.attrs.unset_vault, *attributes.VAULT_ATTRIBUTES)

    def local_disk(self):
        """A disk attached, seeded and cut over: synced by the scheduler."""
        vol = self.disk()
        self.engine.attach(vol.id)
        self.engine.seed(vol.id)
        self.engine.cutover(vol.id)
        return vol

    def test_scheduler_syncs_real_volumes_one_at_a_time(self):
        first, second = self.local_disk(), self.local_disk()
        self.attrs.set_vault(frequency='10m')
        self.attrs.set_volume('vault/' + second.name, frequency='1h')
        # New data on each device, for the syncs to carry to the vault.
        for n, vol in enumerate((first, second)):
            labkit.write_at(self.engine.names(vol.id).device, 8 * MiB,
                            labkit.pattern('sync%d' % n, MiB))
        seeded = {vol.id: sync_points.of(
            self.vault.zfs.snapshots('vault/' + vol.name))
            for vol in (first, second)}
        lock = threading.Lock()
        active = []
        peak = []

        def run(volume_id):
            with lock:
                active.append(volume_id)
                peak.append(len(active))
            try:
                return self.engine.sync(volume_id)
            finally:
                with lock:
                    active.remove(volume_id)

        sched = scheduler.SyncScheduler(self.engine.attributes, run,
                                        workers=1)
        self.addCleanup(sched.close, 600)
        sched.add(first.id)
        sched.add(second.id)
        start = time.time()
        self.assertEqual([first.id, second.id], sched.tick())
        self.assertTrue(sched.drain(600))
        end = time.time()
        self.assertEqual(1, max(peak))
        for n, (vol, frequency) in enumerate(((first, 600),
                                              (second, 3600))):
            outcome = sched.last(vol.id)
            self.assertIsNone(outcome.error)
            ds = 'vault/' + vol.name
            points = sync_points.of(
                self.vault.zfs.snapshots(ds))
            # A new sync point on the vault, the one the lease records.
            self.assertNotIn(points[-1]['guid'],
                             [p['guid'] for p in seeded[vol.id]])
            self.assertEqual(outcome.result.guid, points[-1]['guid'])
            self.assertEqual(points[-1]['guid'],
                             self.vault.leases.get(ds).synced_guid)
            self.assertEqual(labkit.pattern('sync%d' % n, MiB),
                             self.vault_read(vol, 8 * MiB, MiB))
            # next_sync moved to about now + frequency, on the zvol.
            next_sync = int(self.prop(ds, NS + 'next-sync'))
            self.assertGreaterEqual(next_sync, int(start) + frequency)
            self.assertLessEqual(next_sync, int(end) + frequency + 1)
            self.assertEqual(next_sync, self.attrs.volume(ds).next_sync)
        # Nothing is due now.
        self.assertEqual([], sched.tick())
