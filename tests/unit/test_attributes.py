import datetime

from oslo_utils import timeutils
import testtools

from cinder_zfs_vault import attributes
from cinder_zfs_vault import exception
from cinder_zfs_vault import zfs
from tests.unit.fake_executor import failure
from tests.unit.fake_executor import RecordingExecutor

NS = 'org.openstack.zfsvault:'
VOL = 'vault/volume-0b6e9e4b-5b2c-4c8e-9a63-0f1d8f7c2a11'
ALL = ','.join(sorted(attributes.PROPERTIES.values()))
VOLUME_PROPS = ','.join(NS + p for p in ('frequency', 'next-sync',
                                         'upload-rate', 'download-rate',
                                         'sync-mode'))
VAULT_PROPS = ','.join(NS + p for p in ('sync-workers', 'frequency',
                                        'upload-rate', 'download-rate'))
GONE = failure("cannot open '%s': dataset does not exist" % VOL)


def rows(*lines):
    """``zfs get -o name,property,value,source`` output."""
    return ''.join('\t'.join(line) + '\n' for line in lines)


class ParseTest(testtools.TestCase):

    def test_volume_strings_converted(self):
        self.assertEqual(
            {'frequency': 300, 'next_sync': 1700000000,
             'upload_rate': 10 * 1024 ** 2, 'download_rate': 0,
             'sync_mode': 'nosync'},
            attributes.parse_volume(frequency='5m', next_sync='1700000000',
                                    upload_rate='10M', download_rate='0',
                                    sync_mode='nosync'))

    def test_frequency_units(self):
        for raw, seconds in (('60', 60), (90, 90), ('90s', 90),
                             ('1h', 3600), ('2 d', 2 * 86400),
                             ('7d', 7 * 86400)):
            self.assertEqual(seconds, attributes.parse_frequency(raw))

    def test_rates(self):
        for raw, rate in (('0', 0), (0, 0), ('1048576', 1048576),
                          ('10M', 10485760), ('10Mi', 10485760),
                          ('10MiB', 10485760), ('10 MiB/s', 10485760),
                          ('10MB', 10 ** 7), ('1.5GiB', 1610612736),
                          ('1.5G', 1610612736), ('512k', 524288),
                          ('8Mb', 10 ** 6)):
            self.assertEqual(rate, attributes.parse_rate(raw), raw)

    def test_next_sync_forms(self):
        self.assertEqual(1714564800,
                         attributes.parse_next_sync('2024-05-01T12:00:00Z'))
        self.assertEqual(1714564800, attributes.parse_next_sync(
            '2024-05-01T14:00:00+02:00'))
        self.assertEqual(1714564800,
                         attributes.parse_next_sync(1714564800.7))
        timeutils.set_time_override(datetime.datetime(2024, 5, 1, 12, 0, 0))
        self.addCleanup(timeutils.clear_time_override)
        self.assertEqual(1714564800, attributes.parse_next_sync('now'))

    def test_vault(self):
        self.assertEqual({'sync_workers': 4, 'frequency': 3600,
                          'upload_rate': 1024, 'download_rate': 2048},
                         attributes.parse_vault(sync_workers='4',
                                                frequency='1h',
                                                upload_rate='1KiB',
                                                download_rate=2048))

    def test_bad_values_name_the_attribute(self):
        bad = [('frequency', '59'), ('frequency', '8d'), ('frequency', '5x'),
               ('frequency', ''), ('frequency', 1.5), ('frequency', True),
               ('frequency', None), ('frequency', '-60'),
               ('upload_rate', '-5'), ('upload_rate', '-5B'),
               ('upload_rate', 'fast'), ('upload_rate', 1.5),
               ('download_rate', '10X'), ('download_rate', str(2 ** 63)),
               ('next_sync', 'tomorrow'), ('next_sync', -1),
               ('next_sync', float('nan')), ('next_sync', '99999-01-01'),
               ('next_sync', str(10 ** 12)), ('sync_mode', 'async'),
               ('sync_mode', None)]
        for name, value in bad:
            e = self.assertRaises(exception.InvalidInput,
                                  attributes.parse_volume, **{name: value})
            self.assertIn(name, e.message)
        for name, value in (('sync_workers', '0'), ('sync_workers', 65),
                            ('sync_workers', 'two'), ('frequency', '30')):
            e = self.assertRaises(exception.InvalidInput,
                                  attributes.parse_vault, **{name: value})
            self.assertIn(name, e.message)

    def test_unknown_names(self):
        e = self.assertRaises(exception.InvalidInput,
                              attributes.parse_volume, sync_workers='2')
        self.assertIn("'sync_workers'", e.message)
        e = self.assertRaises(exception.InvalidInput,
                              attributes.parse_vault, next_sync='now')
        self.assertIn("'next_sync'", e.message)


class AttributesTest(testtools.TestCase):

    def setUp(self):
        super(AttributesTest, self).setUp()
        self.execute = RecordingExecutor()
        self.attrs = attributes.Attributes(zfs.ZFS(self.execute), 'vault')

    def test_volume_one_get_local_over_volume_and_vault(self):
        self.execute.on('zfs', 'get', out=rows(
            (VOL, NS + 'frequency', '600', 'local'),
            (VOL, NS + 'next-sync', '1700000000', 'local'),
            # inherited from the vault: read from the vault's own line
            (VOL, NS + 'upload-rate', '1024', 'inherited from vault'),
            (VOL, NS + 'sync-workers', '4', 'inherited from vault'),
            (VOL, NS + 'download-rate', '-', '-'),
            ('vault', NS + 'upload-rate', '1024', 'local'),
            ('vault', NS + 'frequency', '120', 'local'),
            ('vault', NS + 'sync-workers', '4', 'local')))
        self.assertEqual(
            attributes.VolumeAttributes(frequency=600, next_sync=1700000000,
                                        upload_rate=1024, download_rate=0,
                                        sync_mode='sync'),
            self.attrs.volume(VOL))
        self.assertEqual([('zfs', 'get', '-Hp', '-o',
                           'name,property,value,source', ALL, VOL,
                           'vault')], self.execute.calls)

    def test_volume_defaults(self):
        self.execute.on('zfs', 'get', out=rows(
            (VOL, NS + 'frequency', '-', '-'), ('vault', NS + 'frequency',
                                                '-', '-')))
        self.assertEqual(
            attributes.VolumeAttributes(300, None, 0, 0, 'sync'),
            self.attrs.volume(VOL))

    def test_bad_stored_value_ignored(self):
        self.execute.on('zfs', 'get', out=rows(
            (VOL, NS + 'frequency', 'often', 'local'),
            ('vault', NS + 'frequency', '900', 'local')))
        self.assertEqual(900, self.attrs.volume(VOL).frequency)

    def test_explicit_only_local(self):
        self.execute.on('zfs', 'get', out=rows(
            (VOL, NS + 'frequency', '300', 'inherited from vault'),
            (VOL, NS + 'sync-mode', 'nosync', 'local'),
            (VOL, NS + 'next-sync', '-', '-')))
        self.assertEqual({'sync_mode': 'nosync'}, self.attrs.explicit(VOL))
        self.assertEqual(('zfs', 'get', '-Hp', '-o',
                          'name,property,value,source', VOLUME_PROPS, VOL),
                         self.execute.calls[0])

    def test_vault(self):
        self.execute.on('zfs', 'get', out=rows(
            ('vault', NS + 'sync-workers', '8', 'local'),
            ('vault', NS + 'frequency', '-', '-')))
        self.assertEqual(attributes.VaultAttributes(8, 300, 0, 0),
                         self.attrs.vault())
        self.assertEqual({'sync_workers': 8}, self.attrs.explicit_vault())
        self.assertEqual(('zfs', 'get', '-Hp', '-o',
                          'name,property,value,source', VAULT_PROPS,
                          'vault'), self.execute.calls[0])

    def test_read_all_one_command(self):
        other = 'vault/volume-1b6e9e4b-5b2c-4c8e-9a63-0f1d8f7c2a11'
        self.execute.on('zfs', 'get', out=rows(
            ('vault', NS + 'frequency', '600', 'local'),
            (VOL, NS + 'frequency', '600', 'inherited from vault'),
            (VOL, NS + 'next-sync', '1700000000', 'local'),
            (other, NS + 'frequency', '3600', 'local')))
        vault, volumes = self.attrs.read_all()
        self.assertEqual(600, vault.frequency)
        self.assertEqual({VOL: attributes.VolumeAttributes(
            600, 1700000000, 0, 0, 'sync'),
            other: attributes.VolumeAttributes(3600, None, 0, 0, 'sync')},
            volumes)
        self.assertEqual([('zfs', 'get', '-Hp', '-d', '1', '-t',
                           'filesystem,volume', '-o',
                           'name,property,value,source', ALL, 'vault')],
                         self.execute.calls)

    def test_set_volume_one_command(self):
        self.attrs.set_volume(VOL, frequency='1h', upload_rate='10M',
                              sync_mode='sync', next_sync=1700000000)
        self.assertEqual([('zfs', 'set', NS + 'frequency=3600',
                           NS + 'next-sync=1700000000', NS + 'sync-mode=sync',
                           NS + 'upload-rate=10485760', VOL)],
                         self.execute.calls)

    def test_set_vault_and_unset(self):
        self.attrs.set_vault(sync_workers=4, download_rate='1GiB')
        self.attrs.unset_vault('sync_workers', 'frequency')
        self.attrs.unset_volume(VOL, 'next_sync')
        self.assertEqual(
            [('zfs', 'set', NS + 'download-rate=1073741824',
              NS + 'sync-workers=4', 'vault'),
             ('zfs', 'inherit', NS + 'sync-workers', 'vault'),
             ('zfs', 'inherit', NS + 'frequency', 'vault'),
             ('zfs', 'inherit', NS + 'next-sync', VOL)],
            self.execute.calls)

    def test_bad_input_runs_nothing(self):
        cases = [
            (self.attrs.set_volume, (VOL,), {'frequency': '5m',
                                             'upload_rate': 'fast'}),
            (self.attrs.set_volume, (VOL,), {'sync_workers': 2}),
            (self.attrs.set_volume, ('vault',), {'frequency': 300}),
            (self.attrs.set_volume, ('other/volume-x',), {'frequency': 300}),
            (self.attrs.set_volume, ('vault/x; rm -rf /',),
             {'frequency': 300}),
            (self.attrs.set_vault, (), {'sync_workers': 0}),
            (self.attrs.set_vault, (), {'sync_mode': 'sync'}),
            (self.attrs.unset_volume, (VOL, 'frequency', 'color'), {}),
            (self.attrs.unset_vault, ('next_sync',), {}),
            (self.attrs.volume, ('vault@snap',), {}),
            (self.attrs.explicit, ('vault',), {}),
        ]
        for call, args, kwargs in cases:
            self.assertRaises(exception.InvalidInput, call, *args, **kwargs)
        self.assertEqual([], self.execute.calls)

    def test_unknown_dataset_not_found(self):
        self.execute.on('zfs', out=GONE)
        for call, args in ((self.attrs.volume, (VOL,)),
                           (self.attrs.explicit, (VOL,)),
                           (self.attrs.set_volume, (VOL,)),
                           (self.attrs.unset_volume, (VOL, 'frequency'))):
            kwargs = {'frequency': 60} if call == self.attrs.set_volume \
                else {}
            self.assertRaises(exception.NotFound, call, *args, **kwargs)

    def test_dataset_of_volume_id(self):
        self.assertEqual(VOL, self.attrs.dataset(VOL.split('volume-')[1]))
        self.assertRaises(exception.InvalidInput, self.attrs.dataset, '../x')
