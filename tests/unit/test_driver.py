"""The Cinder adapter, on Cinder's own test base and fake objects."""

from unittest import mock

from cinder import context
from cinder import exception as cinder_exception
from cinder.interface import volume_driver as volume_interface
from cinder.interface import volume_manageable_driver
from cinder.interface import volume_snapshot_revert
from cinder.tests.unit import fake_snapshot
from cinder.tests.unit import fake_volume
from cinder.tests.unit import test
from cinder.volume import configuration as conf
from cinder.volume import driver as cinder_driver
from oslo_utils import units

from cinder_zfs_vault import driver
from cinder_zfs_vault import opts
from tests.unit.fake_executor import failure
from tests.unit.fake_executor import RecordingExecutor
from tests.unit import rootwrap_check

BACKEND = 'zfsvault'


class DriverComplianceTest(test.TestCase):
    """What Cinder's compliance check (cinder/tests/compliance) asks."""

    def test_interfaces(self):
        for iface in (volume_interface.VolumeDriverCore,
                      volume_manageable_driver.VolumeListManageableDriver,
                      volume_snapshot_revert.VolumeSnapshotRevertDriver):
            self.assertTrue(issubclass(driver.ZFSVaultDriver, iface), iface)

    def test_options_listed(self):
        groups = dict(opts.list_opts())
        self.assertEqual({'backend_defaults', 'zfs_vault_agent',
                          'zfs_vault_endpoint'},
                         set(groups))
        self.assertIn('zfs_vault_dataset',
                      [o.name for o in groups['backend_defaults']])
        self.assertEqual(opts.zfs_vault_opts,
                         driver.ZFSVaultDriver.get_driver_options())


class DriverTest(test.TestCase):

    def setUp(self):
        super(DriverTest, self).setUp()
        self.ctx = context.get_admin_context()
        # Every zfs command must pass cinder-rootwrap with our filters.
        self.execute = RecordingExecutor(check=rootwrap_check.check)
        self.configuration = conf.Configuration(
            cinder_driver.volume_opts + opts.zfs_vault_opts,
            config_group=BACKEND)
        self.override_config('zfs_vault_target_helper', 'tgtadm',
                             group=BACKEND)
        self.driver = driver.ZFSVaultDriver(
            configuration=self.configuration, execute=self.execute)
        self.driver.do_setup(self.ctx)
        self.volume = fake_volume.fake_volume_obj(self.ctx, size=2)

    def test_setup_check(self):
        self.driver.check_for_setup_error()
        self.execute.on('zfs', 'get', out=failure(
            "cannot open 'vault': dataset does not exist"))
        self.assertRaises(cinder_exception.VolumeBackendAPIException,
                          self.driver.check_for_setup_error)

    def test_bad_option_refused_at_setup(self):
        self.override_config('zfs_vault_dataset', 'bad name', group=BACKEND)
        self.assertRaises(cinder_exception.InvalidConfigurationValue,
                          self.driver.do_setup, self.ctx)

    def test_remote_vault_refused_at_setup(self):
        # Its exports would be made here, for a zvol on another host.
        self.override_config('zfs_vault_ssh_host', 'vault1', group=BACKEND)
        before = len(self.execute.calls)
        self.assertRaises(cinder_exception.InvalidConfigurationValue,
                          self.driver.do_setup, self.ctx)
        self.assertEqual(before, len(self.execute.calls))

    def test_stats(self):
        self.execute.on('zfs', 'list', out=(
            'vault\tfilesystem\t%d\t%d\t-\nvault/volume-1\tvolume\t1\t1\t%d\n'
            % (units.Gi, 9 * units.Gi, 20 * units.Gi)))
        self.override_config('reserved_percentage', 5, group=BACKEND)
        stats = self.driver.get_volume_stats(refresh=True)
        pool, = stats['pools']
        self.assertEqual('iSCSI', stats['storage_protocol'])
        self.assertEqual(10.0, pool['total_capacity_gb'])
        self.assertEqual(9.0, pool['free_capacity_gb'])
        self.assertEqual(20.0, pool['provisioned_capacity_gb'])
        self.assertEqual(5, pool['reserved_percentage'])
        self.assertTrue(pool['thin_provisioning_support'])
        self.assertTrue(pool['online_extend_support'])
        self.assertTrue(pool['multiattach'])
        self.assertEqual('20.0', pool['max_over_subscription_ratio'])

    def test_create_volume(self):
        self.driver.create_volume(self.volume)
        self.assertEqual(
            [('zfs', 'create', '-s', '-o', 'compression=lz4', '-V',
              str(2 * units.Gi), 'vault/%s' % self.volume.name)],
            self.execute.commands('zfs', 'create'))

    def test_errors_become_cinder_exceptions(self):
        self.execute.on('zfs', 'create', out=failure(
            "cannot create 'vault/x': out of space"))
        e = self.assertRaises(cinder_exception.VolumeBackendAPIException,
                              self.driver.create_volume, self.volume)
        self.assertIn('out of space', str(e))
        self.volume.size = 0
        self.assertRaises(cinder_exception.InvalidInput,
                          self.driver.create_volume, self.volume)

    def test_delete_busy(self):
        self.execute.on('zfs', 'get', out='origin\t-\n')
        self.execute.on('zfs', 'destroy', out=failure(
            "cannot destroy 'vault/x': dataset is busy"))
        self.assertRaises(cinder_exception.VolumeIsBusy,
                          self.driver.delete_volume, self.volume)

    def test_clone_and_snapshot_names(self):
        src = fake_volume.fake_volume_obj(
            self.ctx, id='0c3d8d55-2aa7-4dc0-9e6c-8e2f2b1e2b11', size=1)
        snap = fake_snapshot.fake_snapshot_obj(self.ctx, volume=src)
        self.execute.on('zfs', 'get', out='volsize\t%d\n' % units.Gi)
        self.driver.create_snapshot(snap)
        self.driver.create_volume_from_snapshot(self.volume, snap)
        self.assertEqual(
            [('zfs', 'snapshot', 'vault/%s@%s' % (src.name, snap.name)),
             ('zfs', 'clone', 'vault/%s@%s' % (src.name, snap.name),
              'vault/%s' % self.volume.name),
             ('zfs', 'get', '-Hp', '-o', 'property,value', 'volsize',
              'vault/%s' % self.volume.name),
             ('zfs', 'set', 'volsize=%d' % (2 * units.Gi),
              'vault/%s' % self.volume.name)],
            self.execute.calls)

    def test_manage_existing_bad_reference(self):
        self.assertRaises(cinder_exception.ManageExistingInvalidReference,
                          self.driver.manage_existing_get_size,
                          self.volume, {})
        self.execute.on('zfs', 'get', out=failure(
            "cannot open 'vault/nope': dataset does not exist"))
        self.assertRaises(cinder_exception.ManageExistingInvalidReference,
                          self.driver.manage_existing, self.volume,
                          {'source-name': 'nope'})
        self.assertEqual([], self.execute.commands('zfs', 'rename'))

    def test_manageable_volumes(self):
        self.execute.on('zfs', 'list', out=(
            'vault/image\t%d\t-\nvault/%s\t%d\t-\n'
            % (units.Gi + 1, self.volume.name, 2 * units.Gi)))
        entries = self.driver.get_manageable_volumes(
            [self.volume], None, 1000, 0, ['size'], ['asc'])
        by_name = {e['reference']['source-name']: e for e in entries}
        self.assertTrue(by_name['image']['safe_to_manage'])
        self.assertEqual(2, by_name['image']['size'])
        self.assertFalse(by_name[self.volume.name]['safe_to_manage'])
        self.assertEqual(self.volume.id,
                         by_name[self.volume.name]['cinder_id'])

    def test_export_uses_target_helper_with_chap(self):
        helper = self.driver.target_driver
        with mock.patch.object(helper, 'create_iscsi_target',
                               return_value=1) as create:
            update = self.driver.create_export(self.ctx, self.volume, {})
        path = '/dev/zvol/vault/%s' % self.volume.name
        self.assertEqual(path, create.call_args[0][3])
        method, user, password = update['provider_auth'].split()
        self.assertEqual('CHAP', method)
        self.assertEqual((user, password), create.call_args[0][4])
        self.assertIn(self.volume.name, update['provider_location'])

    def test_ensure_export_reuses_stored_chap(self):
        self.volume.provider_auth = 'CHAP alice s3cret'
        self.volume.provider_location = (
            '10.0.0.1:3260,1 iqn.2010-10.org.openstack:%s 1'
            % self.volume.name)
        helper = self.driver.target_driver
        with mock.patch.object(helper, 'create_iscsi_target') as create:
            self.driver.ensure_export(self.ctx, self.volume)
        self.assertEqual(('alice', 's3cret'), create.call_args[0][4])

    def test_terminate_connection_without_connector(self):
        self.override_config('zfs_vault_target_helper', 'lioadm',
                             group=BACKEND)
        helper = mock.Mock()
        self.driver.target_driver = helper
        self.volume.provider_location = 'x:3260,1 iqn.x 0'
        self.assertFalse(self.driver.terminate_connection(self.volume, None))
        helper.remove_export.assert_called_once()
        helper.create_export.assert_called_once()
        helper.terminate_connection.assert_not_called()

    def test_terminate_connection(self):
        helper = mock.Mock()
        self.driver.target_driver = helper
        connector = {'initiator': 'iqn.1994-05.com.redhat:abc'}
        self.assertFalse(self.driver.terminate_connection(self.volume,
                                                          connector))
        helper.terminate_connection.assert_called_once_with(self.volume,
                                                            connector)

    def test_local_image_copy_writes_to_zvol(self):
        with mock.patch('cinder.image.image_utils.fetch_to_raw') as fetch:
            self.driver.copy_image_to_volume(self.ctx, self.volume,
                                             mock.sentinel.images, 'img-1')
        self.assertEqual('/dev/zvol/vault/%s' % self.volume.name,
                         fetch.call_args[0][3])
        with mock.patch('cinder.volume.volume_utils.upload_volume') as up:
            self.driver.copy_volume_to_image(self.ctx, self.volume,
                                             mock.sentinel.images, {})
        self.assertEqual('/dev/zvol/vault/%s' % self.volume.name,
                         up.call_args[0][3])
