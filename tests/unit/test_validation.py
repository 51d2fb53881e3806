import functools

import fixtures
import testtools

from cinder_zfs_vault import attributes
from cinder_zfs_vault.compute_host import dm
from cinder_zfs_vault import exception
from cinder_zfs_vault import sync_points
from cinder_zfs_vault import validation
from cinder_zfs_vault.vault_host import origin


class DatasetNameTest(testtools.TestCase):

    def test_valid_names(self):
        for name in ('vault', 'vault/volume-1f2e', 'tank/cinder/v_1.2:3'):
            self.assertEqual(name, validation.dataset(name))

    def test_invalid_names(self):
        for name in ('', '-o', 'vault/-rf', 'vault//x', 'vault/', '/vault',
                     'vault/a b', 'vault/x;rm', 'vault/$(id)', 'a' * 256,
                     'vault/x@y', None, 7, 'vault/.hidden'):
            self.assertRaises(exception.InvalidInput, validation.dataset,
                              name)

    def test_snapshot(self):
        self.assertEqual('v/x@s-1', validation.snapshot('v/x@s-1'))
        for name in ('v/x', 'v/x@', '@s', 'v/x@s@t', 'v/x@-s', 'v/x@a/b'):
            self.assertRaises(exception.InvalidInput, validation.snapshot,
                              name)


class SizeTest(testtools.TestCase):

    def test_sizes(self):
        self.assertEqual(1, validation.size_gib(1))
        self.assertEqual(4, validation.size_gib(4.0))
        for size in (0, -1, 1.5, '1', None, True,
                     validation.MAX_SIZE_GIB + 1):
            self.assertRaises(exception.InvalidInput, validation.size_gib,
                              size)


class AttributeTest(testtools.TestCase):

    def test_volblocksize(self):
        self.assertIsNone(validation.volblocksize(None))
        self.assertEqual(16384, validation.volblocksize(16384))
        for v in (256, 3000, 262144, True, '8192'):
            self.assertRaises(exception.InvalidInput,
                              validation.volblocksize, v)

    def test_compression(self):
        self.assertEqual('lz4', validation.compression('lz4'))
        self.assertRaises(exception.InvalidInput, validation.compression,
                          'lz5')

    def test_user_property(self):
        name = 'org.openstack.zfsvault:lease-owner'
        self.assertEqual(name, validation.user_property(name))
        for bad in ('lease', 'com.other:x', 'org.openstack.zfsvault:',
                    'org.openstack.zfsvault:A B'):
            self.assertRaises(exception.InvalidInput,
                              validation.user_property, bad)

    def test_property_value(self):
        self.assertEqual('12', validation.property_value(12))
        for bad in ('a\nb', 'x' * 8192, 'a\0'):
            self.assertRaises(exception.InvalidInput,
                              validation.property_value, bad)

    def test_volume_id(self):
        uid = '0f9c8d2e-7e5c-4a43-9b6e-4d51d9c1f3a2'
        self.assertEqual(uid, validation.volume_id(uid.upper()))
        self.assertRaises(exception.InvalidInput, validation.volume_id,
                          'not-a-uuid')


# -- hostile input ----------------------------------------------------------
#
# Issue 8, defect 8: every validator refuses these, in one printable line,
# before anything runs. Each list holds what a name typed by an operator, a
# request from a compute host or a ZFS property set by hand could hold:
# a trailing newline ('$' matches before it), a leading '-' (an option),
# NUL, terminal escapes, look-alike Unicode (Cyrillic 'а', fullwidth,
# Arabic-Indic and superscript digits), '..', '/', spaces, shell
# metacharacters and overlong values.

UID = '0f9c8d2e-7e5c-4a43-9b6e-4d51d9c1f3a2'
ESC = '\x1b[2J'
CYRILLIC_A = '\u0430'

HOSTILE = {
    'dataset': (validation.dataset, [
        'vault\n', 'vault/volume-x\n', '-o', 'vault/-o', 'vault/a\0b',
        'vault/' + ESC, 'v' + CYRILLIC_A + 'ult', '\uff56\uff41ult',
        'vault/..', '../vault', '/', 'vault/a\tb', 'vault/x;rm -rf /',
        'vault/`id`', 'vault/a|b', 'vault/a+b', 'vault/' + 'a' * 201,
        b'vault', '']),
    'snapshot_name': (validation.snapshot_name, [
        'zv-1-0123abcd\n', '-R', 'a/b', 'a@b', ESC, 'snap\0', 's ' + 'p',
        '..', 'zv-1-0123abc' + CYRILLIC_A, 'a' * 201, None, '']),
    'snapshot': (validation.snapshot, [
        'vault/x@s\n', 'vault/x@-s', 'vault/x@@s', 'vault/x\n@s',
        'vault/x@s;id']),
    'user_property': (validation.user_property, [
        'org.openstack.zfsvault:lease-owner\n',
        'org.openstack.zfsvault:-x', 'org.openstack.zfsvault:x y',
        'org.openstack.zfsvault:Owner',
        'org.openstack.zfsvault:' + CYRILLIC_A,
        'org.openstack.zfsvault:x=y', 'org.openstack.zfsvault:' + 'a' * 65,
        'com.example:x', None]),
    'property_value': (validation.property_value, [
        'a\tb', 'a' + ESC, 'a\nb', 'a\rb', 'a\0', 'x' * 8192]),
    'volume_id': (validation.volume_id, [
        UID + '\n', '{%s}' % UID, 'urn:uuid:' + UID, UID.replace('-', ''),
        UID.replace('0', '\u0660'), UID[:-1] + 'g', UID + ' ', ' ' + UID,
        '-' + UID[1:], '../' + UID, UID + ';id', 'volume-' + UID, None,
        '']),
    'host': (validation.host, [
        'compute-1\n', '-o', '-', 'compute_1', 'a b', ESC,
        'compute-1' + ESC, 'c' + '\u043e' + 'mpute-1',
        '\uff43\uff4f\uff4d\uff50\uff55\uff54\uff45', 'compute-1.',
        'a..b', 'compute-', 'a.-b', '.compute', 'x' * 254, 'a' * 64,
        'compute-1;reboot', '$(id)', 'a/b', 'a\0', '', None]),
    'initiator': (validation.initiator, [
        'iqn.2004-10.org.example:c1\n',
        'iqn.\uff12\uff10\uff10\uff14-10.org.example:c1',
        'iqn.2004-13.org.example', 'iqn.2004-10.org.example:a_b',
        'iqn.2004-10.org..example', 'iqn.2004-10.org.example-',
        'iqn.2004-10.org.example:', 'iqn.x y', '-o',
        'eui.02004567A425678', 'eui.02004567A425678DX',
        'naa.' + '0' * 15, 'iqn.2004-10.org.example:' + 'a' * 200,
        'IQN.2004-10.org.example', 'iqn.2004-10.org.example:c1;reboot',
        'iqn.2004-10.org.example:' + ESC, None]),
    'generation': (validation.generation, [
        '1\n', '-1', '+1', '1 ', ' 1', '\u0661', '\u00b2', '1e3', '0x10',
        '9' * 19, '', None]),
    'guid': (validation.guid, [
        '1\n', '-1', '\u0661\u0662', '1 2', '', str(2 ** 64), '0x1',
        'abc', '1;id', None, True]),
    'resume_token': (validation.resume_token, [
        '-v', '1-abc-12-789\n', '1-ABC-12-789', '1-abc-12-78 9',
        '1-abc-12', '1-abc-12-789;id', '1-\u00e9-12-789',
        '1-abc-12-' + 'a' * 8192, '', None]),
    'dm name': (dm.DeviceMapper.name, [
        'zvault-x\n', '-o', 'a b', 'a/b', '../x', 'zvault-' + ESC,
        'zv' + CYRILLIC_A + 'ult', 'a' * 122, 'a;b', '', None]),
    'block device': (functools.partial(dm.linear_table, 8), [
        '8:1\n', '\u0668:\u0661', '/dev/sda\n', '/dev/sd\x1ba',
        '/dev/../etc/passwd', '/dev/zvol/vault/v' + '\u043e' + 'lume',
        'sda', '/dev/', '/dev/a b', '-o', None, '/dev/sda\0']),
    'frequency': (attributes.parse_frequency, [
        '5m\n', ' 300', '\u0663\u0660\u0660', '\uff13\uff10\uff10',
        '300\0', '5\tm', '5mm', '1e3', '9' * 5000, '5m;id']),
    'rate': (attributes.parse_rate, [
        '10M\n', '\u0661\u0660', '\u0661\u0660M', '10\tMiB', '10MiB/s/s',
        'inf', 'nan', '1e3', '10M;id', '9' * 5000, '-5']),
    'next_sync': (attributes.parse_next_sync, [
        'now\n', '\u0661' * 10, '2024-05-01T12:00:00Z\n', 'now; reboot',
        '9' * 5000, ESC]),
    'sync_workers': (attributes.parse_sync_workers, [
        '4\n', '\u0664', '\u00b2', ' 4', '4.0', '0x4']),
    'sync_mode': (attributes.parse_sync_mode, [
        'sync\n', 'SYNC', 'nosync ', '\u0455ync', None]),
}


def hostile_count():
    return sum(len(values) for _, values in HOSTILE.values())


class HostileInputTest(testtools.TestCase):

    def test_every_validator_refuses_in_one_printable_line(self):
        for what, (check, values) in sorted(HOSTILE.items()):
            for value in values:
                try:
                    check(value)
                except exception.InvalidInput as e:
                    message = str(e)
                    self.assertTrue(
                        all(' ' <= c <= '~' for c in message),
                        '%s %s: %s' % (what, ascii(value), ascii(message)))
                else:
                    self.fail('%s accepted %s' % (what, ascii(value)))
        self.assertGreaterEqual(hostile_count(), 80)

    def test_trailing_newline_refused(self):
        # '$' matches before a trailing newline: the names below passed.
        for check, value in (
                (validation.dataset, 'vault/volume-x\n'),
                (validation.snapshot_name, 'zv-1-0123abcd\n'),
                (validation.user_property,
                 'org.openstack.zfsvault:lease-owner\n'),
                (dm.DeviceMapper.name, 'zvault-x\n')):
            self.assertRaises(exception.InvalidInput, check, value)

    def test_devno_with_a_newline_is_no_table_field(self):
        # It passed as a major:minor and split the table line in two.
        self.assertRaises(exception.InvalidInput, dm.snapshot_table, 8,
                          '8:1\n', '/dev/zvol/c/volume-x-cow')

    def test_non_ascii_digits_refused(self):
        # '\d' and str.isdigit() take them; int() reads most of them.
        linear = functools.partial(dm.linear_table, 8)
        for check, value in ((attributes.parse_frequency, '\u0663\u0660'),
                             (attributes.parse_rate, '\u0661\u0660'),
                             (attributes.parse_sync_workers, '\u0664'),
                             (linear, '\u0668:\u0661')):
            self.assertRaises(exception.InvalidInput, check, value)
        self.assertFalse(sync_points.is_sync_point('zv-\u0661-0123abcd'))

    def test_no_crash_on_digits_int_cannot_read(self):
        # A superscript two is a digit to isdigit(), and int() refuses
        # both it and 5000 digits with a ValueError, not InvalidInput.
        for check, value in ((attributes.parse_sync_workers, '\u00b2'),
                             (attributes.parse_rate, '9' * 5000),
                             (attributes.parse_frequency, '9' * 5000),
                             (attributes.parse_next_sync, '9' * 5000)):
            self.assertRaises(exception.InvalidInput, check, value)

    def test_hosts_are_rfc_1123(self):
        for host in ('compute_1', 'compute-1.', 'a..b', 'compute-',
                     'a' * 64, 'x' * 254):
            self.assertRaises(exception.InvalidInput, validation.host, host)

    def test_initiators_are_rfc_3720(self):
        for value in ('iqn.\uff12\uff10\uff10\uff14-10.org.example:c1',
                      'iqn.2004-13.org.example',
                      'iqn.2004-10.org..example',
                      'iqn.2004-10.org.example:a_b'):
            self.assertRaises(exception.InvalidInput, validation.initiator,
                              value)

    def test_volume_ids_only_in_canonical_form(self):
        for value in ('{%s}' % UID, 'urn:uuid:' + UID, UID.replace('-', ''),
                      UID.replace('0', '\u0660')):
            self.assertRaises(exception.InvalidInput, validation.volume_id,
                              value)

    def test_sync_point_names(self):
        for snap in ('zv-1-0123abcd\n', 'zv-\u0661-0123abcd',
                     'zv--1-0123abcd', None, 7):
            self.assertFalse(sync_points.is_sync_point(snap), ascii(snap))
        self.assertTrue(sync_points.is_sync_point('zv-12-0123abcd'))


class ValidInputTest(testtools.TestCase):
    """What the validators must keep accepting."""

    def test_valid_values(self):
        for check, value, expected in (
                (validation.host, 'compute-1', None),
                (validation.host, 'node7.example.org', None),
                (validation.host, 'a' * 63, None),
                (validation.host, '.'.join(['a' * 63] * 4)[:253], None),
                (validation.initiator, 'iqn.1993-08.org.debian:01:abc',
                 None),
                (validation.initiator, 'iqn.2004-10.org.example', None),
                (validation.initiator,
                 'iqn.1991-05.com.microsoft:Win-7.Example.local', None),
                (validation.initiator, 'eui.02004567A425678D', None),
                (validation.initiator, 'naa.' + 'f' * 32, None),
                (validation.generation, '0', 0),
                (validation.generation, '9' * 18, int('9' * 18)),
                (validation.guid, '1000', None),
                (validation.guid, 1000, '1000'),
                (validation.guid, str(2 ** 64 - 1), None),
                (validation.resume_token, '1-c49ab5ff3-f0-789c6360640003',
                 None),
                (validation.volume_id, UID.upper(), UID),
                (validation.dataset, 'tank/cinder/v_1.2:3', None),
                (dm.DeviceMapper.name, 'zvault-%s-snap' % UID, None),
                (attributes.parse_frequency, '2 d', 2 * 86400),
                (attributes.parse_rate, '10 MiB/s', 10 * 1024 ** 2),
                (attributes.parse_next_sync, 'NOW', None)):
            result = check(value)
            if expected is not None:
                self.assertEqual(expected, result, ascii(value))
        self.assertEqual('0 8 linear /dev/disk/by-path/ip-[fe80::1]:3260-'
                         'iscsi-iqn.x:y-lun-0 0', dm.linear_table(
                             8, '/dev/disk/by-path/ip-[fe80::1]:3260-iscsi-'
                             'iqn.x:y-lun-0'))
        self.assertEqual('0 8 linear 230:16 0', dm.linear_table(8, '230:16'))


class OriginInitiatorTest(testtools.TestCase):

    def test_export_refuses_before_lio(self):
        # The origin's own check was for whitespace only.
        self.useFixture(fixtures.MockPatch(
            'cinder_zfs_vault.vault_host.origin._rtslib',
            side_effect=AssertionError('LIO reached')))
        exporter = origin.OriginExporter('192.0.2.1')
        for value in ('iqn.x;y', '-o', 'iqn.2004-10.org.example:c1\x1b[2J',
                      'iqn.2004-10.org.ex' + CYRILLIC_A + 'mple', ''):
            self.assertRaises(exception.InvalidInput, exporter.export,
                              'volume-' + UID, '/dev/zvol/vault/x', value,
                              'user', 'secret')
