"""Attributes as ZFS user properties, and the scheduler driving real syncs."""

import threading
import time
import uuid

from cinder_zfs_vault import attributes
from cinder_zfs_vault import exception
from cinder_zfs_vault import executor
from cinder_zfs_vault import replica
from cinder_zfs_vault import scheduler
from cinder_zfs_vault import zfs
from tests.functional import base
from tests.functional import test_replica
from tools import labkit

NS = 'org.openstack.zfsvault:'
MiB = 1024 * 1024


# Space accounting moves with the pool's own background work, not ours.
ACCOUNTING = ('used', 'available', 'referenced', 'written', 'logicalused',
              'logicalreferenced', 'compressratio', 'refcompressratio',
              'usedbydataset', 'usedbysnapshots', 'usedbychildren',
              'usedbyrefreservation')


def zfs_get_all(*names):
    """``zfs get all`` of ``names`` (with sources), but space accounting."""
    out = labkit.run('zfs', 'get', '-Hp', '-o', 'name,property,value,source',
                     'all', *names)
    return [line for line in out.splitlines()
            if line.split('\t')[1] not in ACCOUNTING]


class AttributesBase(object):

    def setUp(self):
        super(AttributesBase, self).setUp()
        self.attrs = attributes.Attributes(
            zfs.ZFS(executor.LocalExecutor()), 'vault')
        # The pools are shared by every test of a run: leave `vault` clean.
        self.addCleanup(self.attrs.unset_vault, *attributes.VAULT_ATTRIBUTES)

    def source(self, name, prop):
        return labkit.run('zfs', 'get', '-H', '-o', 'source', NS + prop,
                          name).strip()


class AttributesTest(AttributesBase, base.FunctionalTestCase):

    def test_volume_attributes_are_zfs_properties(self):
        ds = 'vault/' + self.volume().name
        self.attrs.set_volume(ds, frequency='5m',
                              next_sync='2030-01-01T00:00:00Z',
                              upload_rate='10M', download_rate='1.5GiB',
                              sync_mode='nosync')
        for prop, value in (('frequency', '300'),
                            ('next-sync', '1893456000'),
                            ('upload-rate', '10485760'),
                            ('download-rate', '1610612736'),
                            ('sync-mode', 'nosync')):
            self.assertEqual(value, self.prop(ds, NS + prop))
            self.assertEqual('local', self.source(ds, prop))
        expected = attributes.VolumeAttributes(300, 1893456000, 10485760,
                                               1610612736, 'nosync')
        self.assertEqual(expected, self.attrs.volume(ds))
        self.assertEqual(expected._asdict(), self.attrs.explicit(ds))
        self.attrs.unset_volume(ds, 'frequency', 'upload_rate', 'next_sync')
        self.assertEqual('-', self.prop(ds, NS + 'frequency'))
        self.assertEqual(
            attributes.VolumeAttributes(300, None, 0, 1610612736, 'nosync'),
            self.attrs.volume(ds))
        self.assertEqual({'download_rate': 1610612736,
                          'sync_mode': 'nosync'}, self.attrs.explicit(ds))

    def test_vault_attributes_on_the_vault_root(self):
        ds = 'vault/' + self.volume().name
        self.assertEqual(attributes.VAULT_DEFAULTS, self.attrs.vault())
        self.attrs.set_vault(sync_workers='4', frequency='10m',
                             upload_rate='1M')
        self.assertEqual('4', self.prop('vault', NS + 'sync-workers'))
        self.assertEqual('local', self.source('vault', 'sync-workers'))
        self.assertEqual(attributes.VaultAttributes(4, 600, MiB, 0),
                         self.attrs.vault())
        # A volume without its own value takes the vault's, as ZFS shows.
        self.assertEqual('inherited from vault',
                         self.source(ds, 'frequency'))
        self.assertEqual(
            attributes.VolumeAttributes(600, None, MiB, 0, 'sync'),
            self.attrs.volume(ds))
        self.assertEqual({}, self.attrs.explicit(ds))
        self.attrs.set_volume(ds, frequency='1h')
        self.assertEqual(3600, self.attrs.volume(ds).frequency)
        vault, volumes = self.attrs.read_all()
        self.assertEqual(4, vault.sync_workers)
        self.assertEqual(3600, volumes[ds].frequency)
        self.attrs.unset_vault('sync_workers', 'frequency', 'upload_rate')
        self.assertEqual('-', self.prop('vault', NS + 'sync-workers'))
        self.assertEqual(attributes.VAULT_DEFAULTS, self.attrs.vault())

    def test_bad_values_refused_with_nothing_changed(self):
        ds = 'vault/' + self.volume().name
        self.attrs.set_volume(ds, frequency=120)
        before = zfs_get_all('vault', ds)
        bad = [
            (self.attrs.set_volume, (ds,), {'frequency': '5m',
                                            'upload_rate': 'fast'}),
            (self.attrs.set_volume, (ds,), {'frequency': '30s'}),
            (self.attrs.set_volume, (ds,), {'next_sync': 'tomorrow'}),
            (self.attrs.set_volume, (ds,), {'sync_mode': 'async'}),
            (self.attrs.set_volume, (ds,), {'download_rate': '-1'}),
            (self.attrs.set_volume, (ds,), {'sync_workers': 2}),
            (self.attrs.set_volume, ('vault',), {'frequency': 300}),
            (self.attrs.set_vault, (), {'sync_workers': 65}),
            (self.attrs.set_vault, (), {'next_sync': 'now'}),
            (self.attrs.unset_volume, (ds, 'frequency', 'colour'), {}),
        ]
        for call, args, kwargs in bad:
            self.assertRaises(exception.InvalidInput, call, *args, **kwargs)
        self.assertEqual(before, zfs_get_all('vault', ds))
        self.assertEqual(120, self.attrs.volume(ds).frequency)

    def test_unknown_volume_not_found(self):
        ds = 'vault/volume-%s' % uuid.uuid4()
        self.assertRaises(exception.NotFound, self.attrs.volume, ds)
        self.assertRaises(exception.NotFound, self.attrs.set_volume, ds,
                          frequency=60)


class SchedulerTest(AttributesBase, test_replica.ReplicaTestCase):

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
        seeded = {vol.id: replica.sync_points(
            self.engine.vault_zfs.snapshots('vault/' + vol.name))
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

        sched = scheduler.SyncScheduler(self.attrs, run, workers=1)
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
            points = replica.sync_points(
                self.engine.vault_zfs.snapshots(ds))
            # A new sync point on the vault, the one the lease records.
            self.assertNotIn(points[-1]['guid'],
                             [p['guid'] for p in seeded[vol.id]])
            self.assertEqual(outcome.result.guid, points[-1]['guid'])
            self.assertEqual(points[-1]['guid'],
                             self.engine.leases.get(ds).synced_guid)
            self.assertEqual(labkit.pattern('sync%d' % n, MiB),
                             labkit.read_at(self.zvol(vol), 8 * MiB, MiB))
            # next_sync moved to about now + frequency, on the zvol.
            next_sync = int(self.prop(ds, NS + 'next-sync'))
            self.assertGreaterEqual(next_sync, int(start) + frequency)
            self.assertLessEqual(next_sync, int(end) + frequency + 1)
            self.assertEqual(next_sync, self.attrs.volume(ds).next_sync)
        # Nothing is due now.
        self.assertEqual([], sched.tick())
