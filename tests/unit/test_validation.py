import testtools

from cinder_zfs_vault import exception
from cinder_zfs_vault import validation


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
