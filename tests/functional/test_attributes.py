"""Attributes as ZFS user properties, and the scheduler driving real syncs."""

import uuid

from cinder_zfs_vault import attributes
from cinder_zfs_vault import exception
from cinder_zfs_vault import executor
from cinder_zfs_vault import zfs
from tests.functional import base
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
