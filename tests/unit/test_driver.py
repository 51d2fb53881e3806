"""The Cinder adapter, on Cinder's own test base and fake objects."""

import inspect
import os
from unittest import mock

from cinder import context
from cinder import exception as cinder_exception
from cinder.interface import volume_driver as volume_interface
from cinder.interface import volume_manageable_driver
from cinder.interface import volume_snapshot_revert
from cinder import objects
from cinder.tests.unit import fake_snapshot
from cinder.tests.unit import fake_volume
from cinder.tests.unit import test
from cinder.volume import configuration as conf
from cinder.volume import driver as cinder_driver
import fixtures
from oslo_concurrency import processutils
from oslo_privsep import comm
from oslo_utils import units

from cinder_zfs_vault import attributes
from cinder_zfs_vault import driver
from cinder_zfs_vault import exception
from cinder_zfs_vault import executor as executors
from cinder_zfs_vault import lease
from cinder_zfs_vault import opts
from cinder_zfs_vault.vault_host import agents
from cinder_zfs_vault.vault_host import privileged
from cinder_zfs_vault.vault_host import volumes
from tests.unit.fake_executor import failure
from tests.unit.fake_executor import RecordingExecutor
from tests.unit import rootwrap_check

BACKEND = 'zfsvault'


#: Left to the base, which raises NotImplementedError: the manager falls
#: back to its generic migration; snapshots are not managed (no
#: VolumeManageableSnapshotsDriver), so there is none to list.
OPTIONAL = {'update_migrated_volume', 'get_manageable_snapshots'}


def unimplemented(cls, ifaces):
    """Methods of ``ifaces`` that ``cls`` lacks or cannot be called as.

    Lacks: absent, or left to a base that raises NotImplementedError.
    Cinder's own check (``issubclass``, cinder/tests/compliance) reads only
    classmethods through the interfaces' ``__subclasshook__``, so that any
    VolumeDriver subclass passes it.
    """
    missing = []
    for iface in ifaces:
        for name, method in vars(iface).items():
            if name.startswith('_') or not inspect.isfunction(method):
                continue
            impl = inspect.getattr_static(cls, name, None)
            if isinstance(impl, property):  # BaseVD's ``initialized``...
                continue
            if not inspect.isfunction(impl):
                missing.append(name)
                continue
            args = list(inspect.signature(method).parameters)
            try:
                inspect.signature(impl).bind(*args)
            except TypeError:
                missing.append(name)
                continue
            if (name not in OPTIONAL and
                    'raise NotImplementedError' in inspect.getsource(impl)):
                missing.append(name)
    return missing


class DriverComplianceTest(test.TestCase):
    """Cinder's compliance check (cinder/tests/compliance) and ours."""

    IFACES = (volume_interface.VolumeDriverCore,
              volume_manageable_driver.VolumeListManageableDriver,
              volume_snapshot_revert.VolumeSnapshotRevertDriver)

    def test_interfaces(self):
        for iface in self.IFACES:
            self.assertTrue(issubclass(driver.ZFSVaultDriver, iface), iface)
        self.assertEqual([], unimplemented(driver.ZFSVaultDriver,
                                           self.IFACES))

    def test_an_empty_driver_fails_the_check(self):
        # Issue 9, defect 7: the check above passed any subclass.
        empty = type('Empty', (cinder_driver.VolumeDriver,), {})
        self.assertIn('create_volume', unimplemented(empty, self.IFACES))
        self.assertIn('revert_to_snapshot', unimplemented(empty,
                                                          self.IFACES))

    def test_options_listed(self):
        groups = dict(opts.list_opts())
        self.assertEqual({'backend_defaults', 'zfs_vault_agent',
                          'zfs_vault_endpoint'},
                         set(groups))
        self.assertIn('zfs_vault_dataset',
                      [o.name for o in groups['backend_defaults']])
        self.assertEqual(opts.zfs_vault_opts,
                         driver.ZFSVaultDriver.get_driver_options())


class DriverTestCase(test.TestCase):
    """A driver set up over a recording executor, and a volume."""

    def setUp(self):
        super(DriverTestCase, self).setUp()
        self.ctx = context.get_admin_context()
        # Every zfs command must pass cinder-rootwrap with our filters.
        self.execute = RecordingExecutor(check=rootwrap_check.check)
        # The lease changes run in the privsep daemon as root, not through
        # rootwrap: here in this process, recorded unchecked.
        privileged.vault_pctxt.set_client_mode(False)
        self.addCleanup(privileged.vault_pctxt.set_client_mode, True)
        self.mock_object(privileged, '_executor', lambda timeout: (
            executors.LocalExecutor(execute=self.execute.unchecked,
                                    timeout=timeout)))
        self.configuration = conf.Configuration(
            cinder_driver.volume_opts + opts.zfs_vault_opts,
            config_group=BACKEND)
        self.override_config('zfs_vault_target_helper', 'tgtadm',
                             group=BACKEND)
        # cinder-volume as root runs zfs itself (UnprivilegedZFSTest: as
        # Cinder's user, through the privsep daemon).
        self.mock_object(driver, '_unprivileged', lambda: False)
        self.driver = driver.ZFSVaultDriver(
            configuration=self.configuration, execute=self.execute)
        self.driver.do_setup(self.ctx)
        self.volume = fake_volume.fake_volume_obj(self.ctx, size=2)


class UnprivilegedZFSTest(DriverTestCase):
    """cinder-volume as Cinder's user: zfs in the privsep daemon, filtered.

    The daemon's entrypoint runs in this process (client mode off) over
    the recording executor, with a rootwrap.conf naming this project's
    filters file and a directory holding an executable ``zfs``.
    """

    def setUp(self):
        super(UnprivilegedZFSTest, self).setUp()
        tmp = self.useFixture(fixtures.TempDir()).path
        self.zfs = os.path.join(tmp, 'zfs')
        with open(self.zfs, 'w') as f:
            f.write('#!/bin/sh\nexit 1\n')
        os.chmod(self.zfs, 0o755)
        config = os.path.join(tmp, 'rootwrap.conf')
        with open(config, 'w') as f:
            f.write('[DEFAULT]\nfilters_path = %s\nexec_dirs = %s\n' % (
                os.path.abspath(rootwrap_check.FILTERS), tmp))
        self.mock_object(privileged, 'ROOTWRAP_CONFIG', config)
        privileged._rootwrap.cache_clear()
        self.addCleanup(privileged._rootwrap.cache_clear)
        self.mock_object(driver, '_unprivileged', lambda: True)
        self.driver.do_setup(self.ctx)

    def test_zfs_runs_in_the_daemon_as_the_filters_resolve_it(self):
        self.driver.create_volume(self.volume)
        created = [c for c in self.execute.calls if c[1:2] == ('create',)]
        self.assertEqual(1, len(created))
        self.assertEqual(self.zfs, created[0][0])
        self.assertEqual('vault/volume-%s' % self.volume.id, created[0][-1])

    def test_a_failed_command_keeps_its_meaning(self):
        self.execute.on(self.zfs, 'get', out=failure(
            "cannot open 'vault': dataset does not exist"))
        self.assertRaises(cinder_exception.VolumeBackendAPIException,
                          self.driver.check_for_setup_error)

    def test_what_no_filter_admits_never_runs(self):
        run = privileged.ZFSExecutor(30)
        for argv in (('zfs', 'destroy', '-r', 'rpool/ROOT/debian'),
                     ('zfs', 'receive', 'vault/volume-1'),
                     ('cp', '/etc/shadow', '/tmp/x')):
            self.assertRaises(exception.InvalidInput, run, *argv)
        self.assertEqual([], self.execute.calls)

    def test_the_call_to_the_daemon_is_bounded(self):
        calls = []

        def silent(argv, timeout, _wrap_timeout=None):
            calls.append((timeout, _wrap_timeout))
            raise comm.PrivsepTimeout('no answer')
        self.mock_object(privileged, 'zfs', silent)
        error = self.assertRaises(exception.CommandTimedOut,
                                  privileged.ZFSExecutor(30), 'zfs', 'list')
        self.assertIn('did not answer in %ss' % (30 + privileged.CALL_SLACK),
                      str(error))
        self.assertEqual([(30, 30 + privileged.CALL_SLACK)], calls)

    def test_lease_changes_and_configfs_reads_are_bounded(self):
        vid = '00000000-0000-4000-8000-000000000001'
        calls = []

        def silent(*args, _wrap_timeout=None):
            calls.append(_wrap_timeout)
            raise comm.PrivsepTimeout('no answer')
        for name in ('grant', 'revoke', 'break_lease', '_target_exists',
                     '_initiators'):
            self.mock_object(privileged, name, silent)
        vault = privileged.VaultAuthority('vault', '/var/lib/zv', '192.0.2.10',
                                          3260, 30)
        lease_bound = (privileged.authoritylib.LOCK_TIMEOUT
                       + privileged.LEASE_STEPS * 30 + privileged.CALL_SLACK)
        for call in (lambda: vault.grant(vid, 'compute-1'),
                     lambda: vault.revoke(vid, 'compute-1'),
                     lambda: vault.break_lease(vid)):
            error = self.assertRaises(exception.CommandTimedOut, call)
            self.assertIn('of volume %s: the privsep daemon did not answer '
                          'in %ss' % (vid, lease_bound), str(error))
        self.assertRaises(exception.CommandTimedOut,
                          privileged.target_exists, 'iqn.x')
        self.assertRaises(exception.CommandTimedOut,
                          privileged.initiators, 'iqn.x')
        self.assertEqual([lease_bound] * 3
                         + [privileged.READ_CALL_TIMEOUT] * 2, calls)

    def test_exit_status_is_checked_as_processutils_does(self):
        self.execute.on(self.zfs, 'list', out=failure('boom'))
        run = privileged.ZFSExecutor(30)
        argv = ('zfs', 'list', '-Hp', '-o', 'name', '-t', 'volume', '-r',
                'vault')
        self.assertRaises(processutils.ProcessExecutionError, run, *argv)
        self.assertEqual('boom', run(*argv, check_exit_code=False)[1])
        self.assertEqual('boom', run(*argv, check_exit_code=[0, 1])[1])


class DriverTest(DriverTestCase):

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
        self.driver.agents = None
        stats = self.driver.get_volume_stats(refresh=True)
        pool, = stats['pools']
        self.assertEqual('iSCSI', stats['storage_protocol'])
        self.assertEqual(10.0, pool['total_capacity_gb'])
        self.assertEqual(9.0, pool['free_capacity_gb'])
        self.assertEqual(20.0, pool['provisioned_capacity_gb'])
        self.assertEqual(5, pool['reserved_percentage'])
        self.assertTrue(pool['thin_provisioning_support'])
        # No agent (no transport_url): iSCSI only, so online extend.
        self.assertTrue(pool['online_extend_support'])
        self.assertTrue(pool['multiattach'])
        # Issue 21, 12: with local replicas, an extend of an attached
        # volume is not advertised (Cinder's scheduler refuses it, and the
        # volume stays in-use instead of going to error_extending).
        self.driver.agents = mock.Mock()
        pool, = self.driver.get_volume_stats(refresh=True)['pools']
        self.assertFalse(pool['online_extend_support'])
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
            [('zfs', 'get', '-Hp', '-o', 'property,value',
              ','.join(lease.PROPS + (attributes.PROPERTIES['sync_mode'],)),
              'vault/%s' % src.name),
             ('zfs', 'snapshot', 'vault/%s@%s' % (src.name, snap.name)),
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

    def test_manage_refuses_another_volumes_zvol(self):
        # Issue 9, defect 3: it was renamed, stolen from its volume.
        other = 'volume-0c3d8d55-2aa7-4dc0-9e6c-8e2f2b1e2b11'
        self.execute.on('zfs', 'get', out='type\tvolume\nvolsize\t%d\n'
                        % units.Gi)
        with mock.patch.object(driver.volume_utils,
                               'check_already_managed_volume',
                               return_value=True) as managed:
            for call in (self.driver.manage_existing,
                         self.driver.manage_existing_get_size):
                self.assertRaises(
                    cinder_exception.ManageExistingAlreadyManaged, call,
                    self.volume, {'source-name': other})
        managed.assert_called_with('0c3d8d55-2aa7-4dc0-9e6c-8e2f2b1e2b11')
        self.assertEqual([], self.execute.commands('zfs', 'rename'))

    def test_manage_refuses_a_leased_zvol(self):
        self.execute.on('zfs', 'get', out='type\tvolume\nvolsize\t%d\n'
                        '%s\tcompute-1\n' % (units.Gi, lease.OWNER))
        e = self.assertRaises(
            cinder_exception.ManageExistingInvalidReference,
            self.driver.manage_existing, self.volume,
            {'source-name': 'image'})
        self.assertIn('leased to compute-1', str(e))
        self.assertEqual([], self.execute.commands('zfs', 'rename'))

    # -- volume types (issue 9, "Volume types") -----------------------------

    def vtype(self, name, **specs):
        """A volume type of this backend with ``zfs_vault:<key>`` specs."""
        extra = {'volume_backend_name': BACKEND,
                 'capabilities:thin_provisioning_support': '<is> True'}
        extra.update(('zfs_vault:' + k, v) for k, v in specs.items())
        return fake_volume.fake_volume_type_obj(self.ctx, name=name,
                                                extra_specs=extra)

    FAST = {'sync_mode': 'nosync', 'frequency': '2 h',
            'upload_rate': '10 MiB/s', 'download_rate': '0'}
    FAST_PROPS = ('%s=0' % attributes.PROPERTIES['download_rate'],
                  '%s=7200' % attributes.PROPERTIES['frequency'],
                  '%s=nosync' % attributes.PROPERTIES['sync_mode'],
                  '%s=%d' % (attributes.PROPERTIES['upload_rate'],
                             10 * units.Mi))
    BAD = ({'frequency': '10'}, {'upload_rate': 'fast'},
           {'sync_mode': 'sometimes'}, {'colour': 'blue'},
           {'next_sync': 'now'}, {'frequency': '300', 'download_rate': '-1'})

    def creates(self):
        """Each way a volume is made: (name, call with no arguments)."""
        src = fake_volume.fake_volume_obj(
            self.ctx, id='0c3d8d55-2aa7-4dc0-9e6c-8e2f2b1e2b11', size=1)
        snap = fake_snapshot.fake_snapshot_obj(self.ctx, volume=src)
        return (
            ('create', lambda: self.driver.create_volume(self.volume)),
            ('from snapshot', lambda: self.driver.create_volume_from_snapshot(
                self.volume, snap)),
            ('clone', lambda: self.driver.create_cloned_volume(self.volume,
                                                               src)),
            ('manage', lambda: self.driver.manage_existing(
                self.volume, {'source-name': 'image'})))

    def test_type_specs_set_attributes_of_a_new_volume(self):
        self.volume.volume_type = self.vtype('fast', **self.FAST)
        self.execute.on('zfs', 'get', out='type\tvolume\nvolsize\t%d\n'
                        % (2 * units.Gi))
        for what, create in self.creates():
            del self.execute.calls[:]
            create()
            self.assertEqual(
                [('zfs', 'set') + self.FAST_PROPS
                 + ('vault/%s' % self.volume.name,)],
                [c for c in self.execute.commands('zfs', 'set')
                 if not c[2].startswith('volsize=')], what)
            self.assertEqual([], self.execute.commands('zfs', 'destroy'))
        # No type, or one with no zfs_vault: spec: nothing to set.
        for vtype in (None, self.vtype('plain')):
            del self.execute.calls[:]
            self.volume.volume_type = vtype
            self.driver.create_volume(self.volume)
            self.assertEqual(['create'], [c[1] for c in self.execute.calls])

    def test_bad_type_spec_refuses_the_create_before_any_command(self):
        for specs in self.BAD:
            self.volume.volume_type = self.vtype('bad', **specs)
            for what, create in self.creates():
                e = self.assertRaises(cinder_exception.InvalidInput, create)
                self.assertIn('volume type bad', str(e))
                self.assertEqual([], self.execute.calls, (what, specs))
        e = self.assertRaises(cinder_exception.InvalidInput,
                              self.driver.create_volume, self.volume)
        self.assertIn('download_rate', str(e))
        self.volume.volume_type = self.vtype('bad', colour='blue')
        e = self.assertRaises(cinder_exception.InvalidInput,
                              self.driver.create_volume, self.volume)
        self.assertIn('unknown extra spec zfs_vault:colour', str(e))

    def test_failed_attributes_leave_no_new_volume(self):
        self.volume.volume_type = self.vtype('fast', **self.FAST)
        self.execute.on('zfs', 'get', out='origin\t-\n')
        self.execute.on('zfs', 'set', self.FAST_PROPS[0], out=failure(
            "cannot set property for 'vault/x': pool I/O is suspended"))
        self.assertRaises(cinder_exception.VolumeBackendAPIException,
                          self.driver.create_volume, self.volume)
        self.assertEqual([('zfs', 'destroy', '-r',
                           'vault/%s' % self.volume.name)],
                         self.execute.commands('zfs', 'destroy'))

    def test_failed_attributes_give_a_managed_zvol_its_name_back(self):
        self.volume.volume_type = self.vtype('fast', **self.FAST)
        self.execute.on('zfs', 'get', out='type\tvolume\nvolsize\t%d\n'
                        % units.Gi)
        self.execute.on('zfs', 'set', self.FAST_PROPS[0], out=failure(
            "cannot set property for 'vault/x': pool I/O is suspended"))
        self.assertRaises(cinder_exception.VolumeBackendAPIException,
                          self.driver.manage_existing, self.volume,
                          {'source-name': 'vault/image'})
        new = 'vault/%s' % self.volume.name
        self.assertEqual([('zfs', 'rename', 'vault/image', new),
                          ('zfs', 'rename', new, 'vault/image')],
                         self.execute.commands('zfs', 'rename'))
        self.assertEqual([], self.execute.commands('zfs', 'destroy'))

    def retype(self, old, new, host='vault1@%s#vault' % BACKEND):
        self.volume.host = 'vault1@%s#vault' % BACKEND
        self.volume.volume_type = old
        return self.driver.retype(self.ctx, self.volume, new, {},
                                  {'host': host, 'capabilities': {}})

    def test_retype_sets_the_new_and_unsets_the_old_attributes(self):
        old = self.vtype('old', frequency='600', upload_rate='1M',
                         sync_mode='sync')
        new = self.vtype('new', frequency='1h', download_rate='5 MiB/s',
                         sync_mode='sync')
        self.assertIs(True, self.retype(old, new))
        dataset = 'vault/%s' % self.volume.name
        props = attributes.PROPERTIES
        self.assertEqual(
            [('zfs', 'get', '-Hp', '-o', 'name,property,value,source',
              ','.join(sorted(props.values())), dataset, 'vault'),
             ('zfs', 'set', '%s=%d' % (props['download_rate'], 5 * units.Mi),
              '%s=3600' % props['frequency'], '%s=sync' % props['sync_mode'],
              dataset),
             ('zfs', 'inherit', props['upload_rate'], dataset)],
            self.execute.calls)

    def test_retype_to_a_type_without_specs_unsets_them(self):
        self.assertIs(True, self.retype(self.vtype('fast', **self.FAST),
                                        self.vtype('plain')))
        dataset = 'vault/%s' % self.volume.name
        self.assertEqual(
            [('zfs', 'inherit', attributes.PROPERTIES[n], dataset)
             for n in ('download_rate', 'frequency', 'sync_mode',
                       'upload_rate')],
            self.execute.commands('zfs', 'inherit'))
        self.assertEqual([], self.execute.commands('zfs', 'set'))

    def test_bad_retype_changes_nothing(self):
        old = self.vtype('old', frequency='600')
        for specs in self.BAD:
            e = self.assertRaises(cinder_exception.InvalidInput, self.retype,
                                  old, self.vtype('bad', **specs))
            self.assertIn('volume type bad', str(e))
            self.assertEqual([], self.execute.calls, specs)

    def test_retype_of_a_leased_volume(self):
        self.execute.on('zfs', 'get', '-Hp', '-o', 'property,value',
                        out='%s\tcompute-1\n%s\tsync\n' % (
                            lease.OWNER, attributes.PROPERTIES['sync_mode']))
        # Its attributes change: the vault holds them, the agent reads them.
        self.assertIs(True, self.retype(None, self.vtype(
            'slow', frequency='1 d', sync_mode='sync')))
        self.assertEqual(1, len(self.execute.commands('zfs', 'set')))
        # Its sync mode does not, nor anything else with it.
        del self.execute.calls[:]
        e = self.assertRaises(cinder_exception.InvalidVolume, self.retype,
                              None, self.vtype('fast', **self.FAST))
        self.assertIn('attached to compute-1 through a local replica: a '
                      'change of sync mode is refused', str(e))
        self.assertEqual([], [c for c in self.execute.calls
                              if c[:2] != ('zfs', 'get')])

    def test_retype_to_another_backend_is_not_in_place(self):
        self.assertIs(False, self.retype(
            None, self.vtype('fast', **self.FAST),
            host='vault2@lvm#pool'))
        self.assertEqual([], self.execute.calls)

    def test_delete_snapshot_already_gone(self):
        # Issue 9, defect 2: what real zfs says ended in error_deleting.
        snap = fake_snapshot.fake_snapshot_obj(self.ctx, volume=self.volume)
        self.execute.on('zfs', 'destroy', out=failure(
            'could not find any snapshots to destroy; check snapshot '
            'names.'))
        self.driver.delete_snapshot(snap)
        self.assertEqual(1, len(self.execute.commands('zfs', 'destroy')))

    def test_revert_takes_no_temporary_snapshot(self):
        # Issue 9, defect 1: Cinder's manager snapshots the volume before a
        # revert unless the driver says not to; the revert then refused
        # the newer snapshot and the volume went to 'error'.
        self.assertFalse(self.driver.snapshot_revert_use_temp_snapshot())

    def test_leased_volume_refused_where_it_would_be_stale(self):
        # Issue 9, defects 5 and 6: snapshot, clone, extend, revert and a
        # second export acted on a vault zvol older than the disk.
        snap = fake_snapshot.fake_snapshot_obj(self.ctx, volume=self.volume)
        clone = fake_volume.fake_volume_obj(
            self.ctx, id='0c3d8d55-2aa7-4dc0-9e6c-8e2f2b1e2b11')
        self.execute.on('zfs', 'get', out='%s\tcompute-1\n%s\tsync\n' % (
            lease.OWNER, attributes.PROPERTIES['sync_mode']))
        self.driver.target_driver = mock.Mock()
        self.driver.agents = None  # a snapshot would ask the agent
        for call, args in (
                (self.driver.create_snapshot, (snap,)),
                (self.driver.create_cloned_volume, (clone, self.volume)),
                (self.driver.extend_volume, (self.volume, 3)),
                (self.driver.revert_to_snapshot, (self.ctx, self.volume,
                                                  snap)),
                (self.driver.initialize_connection, (self.volume, {
                    'initiator': 'iqn.1994-05.org.example:other'}))):
            e = self.assertRaises(cinder_exception.InvalidVolume, call, *args)
            self.assertIn('attached to compute-1 through a local replica',
                          str(e))
        self.assertEqual([], [c for c in self.execute.calls
                              if c[:2] != ('zfs', 'get')])
        self.driver.target_driver.initialize_connection.assert_not_called()

    def test_nosync_disk_may_be_snapshotted(self):
        snap = fake_snapshot.fake_snapshot_obj(self.ctx, volume=self.volume)
        self.execute.on('zfs', 'get', out='%s\tcompute-1\n%s\tnosync\n' % (
            lease.OWNER, attributes.PROPERTIES['sync_mode']))
        self.driver.create_snapshot(snap)
        self.assertEqual(1, len(self.execute.commands('zfs', 'snapshot')))

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

    def attachments(self, *connectors):
        self.volume.volume_attachment = objects.VolumeAttachmentList(
            objects=[objects.VolumeAttachment(connector=c)
                     for c in connectors])

    def test_terminate_connection_without_connector(self):
        # Issue 9, defect 4: the export was rebuilt with no ACL, revoking
        # every other attachment's host, and False was returned.
        self.override_config('zfs_vault_target_helper', 'lioadm',
                             group=BACKEND)
        helper = mock.Mock()
        self.driver.target_driver = helper
        self.volume.provider_location = 'x:3260,1 iqn.x 0'
        self.attachments({'initiator': 'iqn.1994-05.org.example:live'}, None)
        with mock.patch.object(driver.privileged, 'initiators', return_value=[
                'iqn.1994-05.org.example:gone',
                'iqn.1994-05.org.example:live']) as initiators:
            self.assertTrue(self.driver.terminate_connection(self.volume,
                                                             None))
        initiators.assert_called_once_with('iqn.x')
        helper.terminate_connection.assert_called_once_with(
            self.volume, {'initiator': 'iqn.1994-05.org.example:gone'})
        helper.remove_export.assert_not_called()
        helper.create_export.assert_not_called()

    def test_terminate_connection_beside_a_reserved_attachment(self):
        # A multiattach volume with an attachment nova reserved but has
        # not connected: its connector is None (it raised TypeError).
        helper = mock.Mock()
        self.driver.target_driver = helper
        connector = {'initiator': 'iqn.1994-05.org.example:a'}
        self.volume.multiattach = True
        self.attachments(connector, None)
        self.assertTrue(self.driver.terminate_connection(self.volume,
                                                         connector))
        helper.terminate_connection.assert_called_once_with(self.volume,
                                                            connector)

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


class FakeAgents(object):
    """vault_host.agents.Agents with the answers of live (or dead) agents."""

    def __init__(self, alive=True, detach_error=None):
        self.calls = []
        self._alive = alive
        self.detach_error = detach_error

    def alive(self, host):
        self.calls.append(('alive', host))
        return self._alive

    def attach(self, host, volume_id):
        self.calls.append(('attach', host, volume_id))
        return '/dev/mapper/zvault-' + volume_id

    def detach(self, host, volume_id):
        self.calls.append(('detach', host, volume_id))
        if self.detach_error:
            raise self.detach_error
        return {'snapshot': 'zv-3-0a1b2c3d', 'guid': '42', 'bytes': 0,
                'seconds': 0.1}

    def sync(self, host, volume_id):
        self.calls.append(('sync', host, volume_id))
        return {'snapshot': 'compute/volume-%s@zv-3-0a1b2c3d' % volume_id,
                'guid': '42', 'bytes': 4096, 'seconds': 0.1}


class LocalConnectionTest(DriverTestCase):
    """initialize/terminate_connection with the hosts' agents."""

    CONNECTOR = {'host': 'compute-1',
                 'initiator': 'iqn.1994-05.org.example:compute-1'}

    def setUp(self):
        super(LocalConnectionTest, self).setUp()
        self.agents = self.driver.agents = FakeAgents()
        self.helper = self.driver.target_driver = mock.Mock()

    def held(self, owner='', mode='-', granted='-', leased_as='-',
             abandoned='-'):
        """The volume's lease and sync mode, as ``zfs get`` answers."""
        self.execute.on('zfs', 'get', out=''.join(
            '%s\t%s\n' % row for row in (
                (lease.OWNER, owner or '-'),
                (attributes.PROPERTIES['sync_mode'], mode),
                (lease.GRANTED, granted), (lease.MODE, leased_as),
                (lease.ABANDONED, abandoned))))

    def changes(self):
        """The commands that changed something (all but ``zfs get``)."""
        return [c for c in self.execute.calls if c[:2] != ('zfs', 'get')]

    def test_agents_have_a_bus_of_their_own(self):
        # Issue 21, 13: the agents' account must not be Cinder's.
        self.override_config('transport_url', 'fake:/cinder')
        self.override_config('zfs_vault_agent_transport_url',
                             'fake:/zfs-vault', group=BACKEND)
        drv = driver.ZFSVaultDriver(configuration=self.configuration,
                                    execute=self.execute)
        with mock.patch.object(driver.LOG, 'warning') as warning:
            drv.do_setup(self.ctx)
        warning.assert_not_called()
        self.assertEqual('zfs-vault',
                         drv.agents.transport._driver._url.virtual_host)
        self.override_config('zfs_vault_agent_transport_url', None,
                             group=BACKEND)
        with mock.patch.object(driver.LOG, 'warning') as warning:
            drv.do_setup(self.ctx)
        self.assertIn("Cinder's own message bus",
                      warning.call_args_list[0][0][0])

    def test_setup_calls_agents_over_the_transport_url(self):
        self.assertIsNone(driver.ZFSVaultDriver(
            configuration=self.configuration, execute=self.execute).agents)
        self.override_config('transport_url', 'fake:/')
        drv = driver.ZFSVaultDriver(configuration=self.configuration,
                                    execute=self.execute)
        drv.do_setup(self.ctx)
        self.assertIsInstance(drv.agents, agents.Agents)
        self.override_config('zfs_vault_local_attach', False, group=BACKEND)
        drv.do_setup(self.ctx)
        self.assertIsNone(drv.agents)

    def test_sync_volume_attaches_through_the_agent(self):
        self.held()
        info = self.driver.initialize_connection(self.volume, self.CONNECTOR)
        self.assertEqual({'driver_volume_type': 'local', 'data': {
            'device_path': '/dev/mapper/zvault-' + self.volume.name_id}},
            info)
        self.assertEqual([('alive', 'compute-1'),
                          ('attach', 'compute-1', self.volume.name_id)],
                         self.agents.calls)
        self.helper.initialize_connection.assert_not_called()

    def test_attach_grants_the_disk_to_the_host_first(self):
        # Issue 21, 1: the vault leases a disk only to a host Cinder
        # attaches it to; the driver records it before the agent asks.
        self.held()
        self.driver.initialize_connection(self.volume, self.CONNECTOR)
        self.assertEqual([('zfs', 'set', lease.GRANTED + '=compute-1',
                           'vault/' + self.volume.name)], self.changes())

    def test_failed_attach_takes_its_grant_back(self):
        self.held(granted='compute-1')

        def refused(host, volume_id):
            raise lease.NotGranted('vault/volume-x is not attached to '
                                   'compute-one')
        self.agents.attach = refused
        self.assertRaises(cinder_exception.VolumeBackendAPIException,
                          self.driver.initialize_connection, self.volume,
                          self.CONNECTOR)
        self.assertEqual([('zfs', 'inherit', lease.GRANTED,
                           'vault/' + self.volume.name)], self.changes())

    def test_timed_out_attach_that_took_the_lease_is_marked(self):
        # Issue 21, 8: past the attach timeout Cinder fails the attachment
        # and never detaches it; the agent took the lease all the same.
        self.held('compute-1', 'sync', granted='compute-1')

        def late(host, volume_id):
            raise agents.AgentUnreachable('the zfs-vault-agent of '
                                          'compute-1 did not answer attach')
        self.agents.attach = late
        self.assertRaises(cinder_exception.VolumeBackendAPIException,
                          self.driver.initialize_connection, self.volume,
                          self.CONNECTOR)
        self.assertEqual([('zfs', 'set', lease.ABANDONED + '=compute-1',
                           'vault/' + self.volume.name)], self.changes())

    def test_abandoned_disk_is_returned_before_it_goes_elsewhere(self):
        # ... so that an attach elsewhere, or a delete, is not refused for
        # ever with the volume 'available' in Cinder.
        self.held('compute-1', 'sync', granted='compute-1',
                  abandoned='compute-1')
        returned = []

        def detach(host, volume_id):
            returned.append(host)
            self.held(granted='compute-1')  # the agent released it
            return {'snapshot': 'zv-3-0a1b2c3d', 'guid': '42'}
        self.agents.detach = detach
        info = self.driver.initialize_connection(
            self.volume, dict(self.CONNECTOR, host='compute-2'))
        self.assertEqual('local', info['driver_volume_type'])
        self.assertEqual(['compute-1'], returned)
        self.assertIn(('zfs', 'inherit', lease.GRANTED,
                       'vault/' + self.volume.name), self.changes())
        # An attach on the abandoned host itself takes the disk as it is.
        self.held('compute-1', 'sync', granted='compute-1',
                  abandoned='compute-1')
        self.driver.initialize_connection(self.volume, self.CONNECTOR)
        self.assertEqual(['compute-1'], returned)

    def test_delete_returns_an_abandoned_disk_first(self):
        self.held('compute-1', 'sync', granted='compute-1',
                  abandoned='compute-1')
        returned = []

        def detach(host, volume_id):
            returned.append(host)
            self.held()
            self.execute.on('zfs', 'get', '-Hp', '-o', 'property,value',
                            'origin', out='origin\t-\n')
            return None
        self.agents.detach = detach
        self.execute.on('zfs', 'list', out='')
        self.driver.delete_volume(self.volume)
        self.assertEqual(['compute-1'], returned)
        self.assertIn(('zfs', 'destroy', '-r', 'vault/' + self.volume.name),
                      self.execute.calls)

    def test_delete_of_a_volume_already_gone_with_agents(self):
        # The lab's clean-clone run: _reclaim's lease read failed the
        # delete of a volume already gone (a delete must succeed so).
        self.execute.on('zfs', 'get', out=failure(
            "cannot open 'vault/%s': dataset does not exist"
            % self.volume.name))
        self.execute.on('zfs', 'list', out=failure(
            "cannot open 'vault/%s': dataset does not exist"
            % self.volume.name))
        self.driver.delete_volume(self.volume)
        self.assertEqual([], self.agents.calls)

    def test_second_host_of_an_iscsi_attached_volume_gets_iscsi(self):
        # Issue 21, 2: attached over iSCSI to compute-2 (no lease: its
        # agent did not answer, or the volume was nosync then), a second
        # attachment (a live migration's destination) must not seed a
        # replica from a zvol compute-2 still writes.
        self.held()
        self.volume.volume_attachment = objects.VolumeAttachmentList(
            objects=[objects.VolumeAttachment(connector={
                'host': 'compute-2', 'initiator': 'iqn.x:compute-2'}),
                objects.VolumeAttachment(connector=None)])
        self.iscsi()
        self.assertEqual([], self.changes())

    def test_detach_naming_another_host_changes_nothing(self):
        # Issue 21, 9: the lease is compute-one's (the agent's name), the
        # connector says compute-1 (nova's): the final sync was skipped.
        self.held('compute-one', 'sync', granted='compute-one')
        e = self.assertRaises(cinder_exception.InvalidVolume,
                              self.driver.terminate_connection,
                              self.volume, self.CONNECTOR)
        self.assertIn('must be one name', str(e))
        self.assertEqual([], self.agents.calls)
        self.assertEqual([], self.changes())
        self.helper.terminate_connection.assert_not_called()

    def test_detach_takes_the_grant_back_after_the_final_sync(self):
        self.held('compute-1', 'sync', granted='compute-1')

        def detach(host, volume_id):
            # The agent's final sync and release, as the vault records it.
            self.held(granted='compute-1')
            return {'snapshot': 'zv-3-0a1b2c3d', 'guid': '42'}
        self.agents.detach = detach
        self.driver.terminate_connection(self.volume, self.CONNECTOR)
        self.assertEqual([('zfs', 'inherit', lease.GRANTED,
                           'vault/' + self.volume.name)], self.changes())

    def test_image_upload_of_an_attached_volume_is_refused(self):
        # Issue 21, 3: Cinder's enable_force_upload of an in-use volume
        # read the vault's copy, without the VM's newest writes.
        self.held('compute-1', 'sync')
        with mock.patch.object(driver.volume_utils, 'upload_volume') as up:
            e = self.assertRaises(cinder_exception.InvalidVolume,
                                  self.driver.copy_volume_to_image,
                                  self.ctx, self.volume, None, {})
        self.assertIn('an image upload is refused', str(e))
        up.assert_not_called()

    def test_staleness_is_judged_by_the_lease_not_the_attribute(self):
        # Issue 21, 4: out with a local replica, then `zfs-vault set
        # --sync-mode nosync`: a snapshot and a clone must still come from
        # the agent's sync point, never a stale copy of the vault zvol.
        self.held('compute-1', 'nosync', leased_as='sync')
        snap = fake_snapshot.fake_snapshot_obj(self.ctx, volume=self.volume)
        self.execute.on('zfs', 'list', '-Hp', '-o',
                        'name,createtxg,clones,userrefs,guid',
                        out='vault/%s@zv-3-0a1b2c3d\t9\t-\t1\t42\n'
                        % self.volume.name)
        self.driver.create_snapshot(snap)
        self.assertEqual([('sync', 'compute-1', self.volume.name_id)],
                         self.agents.calls)
        self.assertEqual([], self.execute.commands('zfs', 'snapshot'))
        self.execute.on('zfs', 'get', '-Hp', '-o', 'property,value',
                        'volsize', out='volsize\t%d\n' % units.Gi)
        clone = fake_volume.fake_volume_obj(
            self.ctx, id='0c3d8d55-2aa7-4dc0-9e6c-8e2f2b1e2b11')
        self.driver.create_cloned_volume(clone, self.volume)
        self.assertEqual([('sync', 'compute-1', self.volume.name_id)] * 2,
                         self.agents.calls)
        self.assertEqual([], self.execute.commands('zfs', 'snapshot'))
        kept = 'vault/%s@clone-%s' % (self.volume.name, clone.name)
        self.assertEqual([('zfs', 'rename', 'vault/%s@zv-3-0a1b2c3d'
                           % self.volume.name, kept)],
                         self.execute.commands('zfs', 'rename')[-1:])
        self.assertEqual(kept, self.execute.commands('zfs', 'clone')[0][-2])

    def test_a_clone_of_a_volume_out_with_no_agent_to_call_is_refused(self):
        self.driver.agents = None
        self.held('compute-1', 'sync', leased_as='sync')
        clone = fake_volume.fake_volume_obj(
            self.ctx, id='0c3d8d55-2aa7-4dc0-9e6c-8e2f2b1e2b11')
        self.assertRaises(cinder_exception.InvalidVolume,
                          self.driver.create_cloned_volume, clone,
                          self.volume)
        self.assertEqual([], self.changes())

    def test_attached_again_on_its_own_host(self):
        self.held('compute-1', 'sync')
        info = self.driver.initialize_connection(self.volume, self.CONNECTOR)
        self.assertEqual('local', info['driver_volume_type'])

    def iscsi(self, connector=None):
        self.driver.initialize_connection(self.volume,
                                          connector or self.CONNECTOR)
        self.helper.initialize_connection.assert_called_once_with(
            self.volume, connector or self.CONNECTOR)
        self.assertNotIn('attach', [c[0] for c in self.agents.calls])

    def test_nosync_volume_is_iscsi(self):
        self.held(mode='nosync')
        self.iscsi()

    def test_multiattach_volume_is_iscsi(self):
        self.held()
        self.volume.multiattach = True
        self.iscsi()

    def test_host_without_a_live_agent_is_iscsi(self):
        self.held()
        self.agents._alive = False
        self.iscsi()

    def test_connector_without_host_is_iscsi(self):
        self.held()
        self.iscsi({'initiator': 'iqn.1994-05.org.example:x'})

    def test_volume_out_on_another_host_is_refused(self):
        self.held('compute-2', 'sync')
        e = self.assertRaises(cinder_exception.InvalidVolume,
                              self.driver.initialize_connection,
                              self.volume, self.CONNECTOR)
        self.assertIn('compute-2', str(e))
        self.assertEqual([], self.agents.calls)
        self.helper.initialize_connection.assert_not_called()

    def test_detach_returns_the_disk_through_the_agent(self):
        self.held('compute-1', 'sync')
        self.assertFalse(self.driver.terminate_connection(self.volume,
                                                          self.CONNECTOR))
        self.assertEqual([('detach', 'compute-1', self.volume.name_id)],
                         self.agents.calls)
        self.helper.terminate_connection.assert_not_called()

    def test_detach_with_the_agent_away_fails_and_keeps_the_lease(self):
        self.held('compute-1', 'sync')
        self.agents.detach_error = agents.AgentUnreachable(
            'the zfs-vault-agent of compute-1 did not answer detach in '
            '600 s')
        e = self.assertRaises(cinder_exception.VolumeBackendAPIException,
                              self.driver.terminate_connection,
                              self.volume, self.CONNECTOR)
        self.assertIn('did not answer detach', str(e))
        self.assertIn('retry is safe', str(e))
        self.assertEqual([], [c for c in self.execute.calls
                              if c[:2] != ('zfs', 'get')])

    def test_iscsi_detach_of_an_unleased_volume(self):
        self.held()
        self.driver.terminate_connection(self.volume, self.CONNECTOR)
        self.assertEqual([], self.agents.calls)
        self.helper.terminate_connection.assert_called_once_with(
            self.volume, self.CONNECTOR)

    def test_force_detach_fences_the_host(self):
        self.held('compute-1', 'sync')
        authority = mock.Mock()
        authority.break_lease.return_value = lease.FREE._replace(
            owner='compute-1', generation=7, synced_guid='42',
            synced_at=1e9)
        with mock.patch.object(self.driver, '_authority',
                               return_value=authority), \
                mock.patch.object(driver.LOG, 'warning') as warning:
            self.assertFalse(self.driver.terminate_connection(self.volume,
                                                              None))
        authority.break_lease.assert_called_once_with(self.volume.name_id)
        authority.revoke.assert_called_once_with(self.volume.name_id,
                                                 'compute-1', abandon=False)
        self.assertIn('writes on %(host)s after it are not in the vault',
                      warning.call_args[0][0])
        self.assertEqual([], self.agents.calls)

    def test_snapshot_of_an_attached_volume_is_a_sync_point_kept(self):
        self.held('compute-1', 'sync')
        snap = fake_snapshot.fake_snapshot_obj(self.ctx, volume=self.volume)
        dataset = 'vault/' + self.volume.name
        self.execute.on('zfs', 'list', '-Hp', '-o',
                        'name,createtxg,clones,userrefs,guid',
                        out='%s@zv-3-0a1b2c3d\t9\t-\t1\t42\n' % dataset)
        self.driver.create_snapshot(snap)
        self.assertEqual([('sync', 'compute-1', self.volume.name_id)],
                         self.agents.calls)
        self.assertEqual(
            [('zfs', 'set', volumes.SYNC_POINT + '=zv-3-0a1b2c3d',
              dataset + '@zv-3-0a1b2c3d'),
             ('zfs', 'rename', dataset + '@zv-3-0a1b2c3d',
              '%s@%s' % (dataset, snap.name))],
            [c for c in self.execute.calls if c[1] in ('set', 'rename')])
        self.assertEqual([], self.execute.commands('zfs', 'snapshot'))

    def test_no_iscsi_export_for_a_local_replica(self):
        # LIO lets one device back one storage object: Cinder's export of
        # the zvol made the vault's origin export for the host fail.
        self.held()
        self.assertIsNone(self.driver.create_export(self.ctx, self.volume,
                                                    self.CONNECTOR))
        self.helper.create_export.assert_not_called()
        info = self.driver.initialize_connection(self.volume, self.CONNECTOR)
        self.assertEqual('local', info['driver_volume_type'])
        # Decided once, by create_export, for both calls.
        self.assertEqual(['alive', 'attach'],
                         [c[0] for c in self.agents.calls])

    def test_iscsi_export_when_the_host_has_no_agent(self):
        self.held()
        self.agents._alive = False
        self.helper.create_export.return_value = {'location': 'l',
                                                  'auth': 'CHAP a b'}
        self.assertEqual({'provider_location': 'l',
                          'provider_auth': 'CHAP a b'},
                         self.driver.create_export(self.ctx, self.volume,
                                                   self.CONNECTOR))
        self.driver.initialize_connection(self.volume, self.CONNECTOR)
        self.helper.initialize_connection.assert_called_once_with(
            self.volume, self.CONNECTOR)

    def test_leased_volume_has_no_export_to_ensure(self):
        self.held('compute-1', 'sync')
        self.assertIsNone(self.driver.ensure_export(self.ctx, self.volume))
        self.helper.ensure_export.assert_not_called()

    def test_remove_export_after_a_local_replica(self):
        self.override_config('zfs_vault_target_helper', 'lioadm',
                             group=BACKEND)
        iqn = 'iqn.2010-10.org.openstack:' + self.volume.name
        with mock.patch.object(driver.privileged, 'target_exists',
                               return_value=False) as exists:
            self.driver.remove_export(self.ctx, self.volume)
        exists.assert_called_once_with(iqn)
        self.helper.remove_export.assert_not_called()
        with mock.patch.object(driver.privileged, 'target_exists',
                               return_value=True):
            self.driver.remove_export(self.ctx, self.volume)
        self.helper.remove_export.assert_called_once_with(self.ctx,
                                                          self.volume)
