import testtools

from cinder_zfs_vault import exception
from cinder_zfs_vault import lease
from cinder_zfs_vault.vault_host import volumes as vault
from cinder_zfs_vault import zfs
from tests.unit.fake_executor import failure
from tests.unit.fake_executor import RecordingExecutor
from tests.unit import rootwrap_check

GiB = 1024 ** 3
GONE = failure("cannot open 'vault/x': dataset does not exist")


class VaultTest(testtools.TestCase):

    def setUp(self):
        super(VaultTest, self).setUp()
        # Every zfs command must pass cinder-rootwrap with our filters.
        self.execute = RecordingExecutor(check=rootwrap_check.check)
        self.vault = vault.Vault(zfs.ZFS(self.execute), 'vault',
                                 compression='lz4')

    def snaps(self, *rows):
        """Answer 'zfs list -t snapshot' with (name, clones) rows."""
        out = ''.join('%s\t%d\t%s\t0\t%d\n' % (n, i, c or '-', i)
                      for i, (n, c) in enumerate(rows))
        self.execute.on('zfs', 'list', '-Hp', '-o',
                        'name,createtxg,clones,userrefs,guid', out=out)

    def test_create_volume(self):
        self.vault.create_volume('volume-1', 2)
        self.assertEqual([('zfs', 'create', '-s', '-o', 'compression=lz4',
                           '-V', str(2 * GiB), 'vault/volume-1')],
                         self.execute.calls)

    def test_create_volume_bad_input_runs_nothing(self):
        for name, size in (('volume-1', 0), ('../x', 1), ('a/b', 1),
                           ('volume-1', 1.5), ('-rf', 1)):
            self.assertRaises(exception.InvalidInput,
                              self.vault.create_volume, name, size)
        self.assertEqual([], self.execute.calls)

    def test_create_out_of_space(self):
        self.execute.on('zfs', 'create', out=failure(
            "cannot create 'vault/volume-1': out of space"))
        self.assertRaises(exception.OutOfSpace, self.vault.create_volume,
                          'volume-1', 100)

    def test_delete_already_gone_succeeds(self):
        self.execute.on('zfs', 'list', out=GONE)
        self.vault.delete_volume('volume-1')
        self.assertEqual([], self.execute.commands('zfs', 'destroy'))

    def test_delete_plain_volume(self):
        self.snaps()
        self.execute.on('zfs', 'get', out='origin\t-\n')
        self.vault.delete_volume('volume-1')
        self.assertEqual([('zfs', 'destroy', '-r', 'vault/volume-1')],
                         self.execute.commands('zfs', 'destroy'))
        self.assertEqual([], self.execute.commands('zfs', 'promote'))

    def test_delete_with_clones_promotes_newest_clone(self):
        self.snaps(('vault/volume-1@clone-volume-2', 'vault/volume-2'),
                   ('vault/volume-1@snapshot-s',
                    'vault/volume-3,vault/volume-4'),
                   ('vault/volume-1@later', None))
        self.execute.on('zfs', 'get', '-Hp', '-o', 'property,value',
                        'createtxg', 'vault/volume-3', out='createtxg\t50\n')
        self.execute.on('zfs', 'get', '-Hp', '-o', 'property,value',
                        'createtxg', 'vault/volume-4', out='createtxg\t90\n')
        self.execute.on('zfs', 'get', '-Hp', '-o', 'property,value',
                        'origin', out='origin\tvault/volume-4@snapshot-s\n')
        self.vault.delete_volume('volume-1')
        self.assertEqual([('zfs', 'promote', 'vault/volume-4')],
                         self.execute.commands('zfs', 'promote'))
        destroys = self.execute.commands('zfs', 'destroy')
        self.assertEqual(('zfs', 'destroy', '-r', 'vault/volume-1'),
                         destroys[0])

    def test_delete_leased_volume_refused(self):
        self.snaps()
        self.execute.on('zfs', 'get', out='org.openstack.zfsvault:'
                                          'lease-owner\tcompute-1\n')
        e = self.assertRaises(exception.Busy, self.vault.delete_volume,
                              'volume-1')
        self.assertIn('compute-1', e.message)
        self.assertEqual([], self.execute.commands('zfs', 'destroy'))

    def test_delete_busy(self):
        self.snaps()
        self.execute.on('zfs', 'get', out='origin\t-\n')
        self.execute.on('zfs', 'destroy', out=failure(
            "cannot destroy 'vault/volume-1': dataset is busy"))
        self.assertRaises(exception.Busy, self.vault.delete_volume,
                          'volume-1')

    def test_delete_clone_prunes_its_clone_snapshot(self):
        self.snaps()
        self.execute.on('zfs', 'get', out='origin\tvault/volume-1@'
                                          'clone-volume-2\n')
        self.vault.delete_volume('volume-2')
        # After the clone is gone its origin snapshot has no clones left.
        self.snaps(('vault/volume-1@clone-volume-2', None))
        self.vault._prune_clone_snapshots('vault/volume-1')
        self.assertIn(('zfs', 'destroy', '-d',
                       'vault/volume-1@clone-volume-2'),
                      self.execute.commands('zfs', 'destroy'))

    def test_clone_volume(self):
        self.execute.on('zfs', 'get', out='volsize\t%d\n' % GiB)
        self.vault.clone_volume('volume-1', 'volume-2', 3)
        self.assertEqual(
            [('zfs', 'snapshot', 'vault/volume-1@clone-volume-2'),
             ('zfs', 'clone', 'vault/volume-1@clone-volume-2',
              'vault/volume-2'),
             ('zfs', 'get', '-Hp', '-o', 'property,value', 'volsize',
              'vault/volume-2'),
             ('zfs', 'set', 'volsize=%d' % (3 * GiB), 'vault/volume-2')],
            self.execute.calls)

    def test_clone_volume_failure_leaves_nothing(self):
        self.execute.on('zfs', 'get', out='volsize\t%d\n' % GiB)
        self.execute.on('zfs', 'set', out=failure(
            "cannot set property for 'vault/volume-2': size is greater "
            "than available space"))
        self.assertRaises(exception.OutOfSpace, self.vault.clone_volume,
                          'volume-1', 'volume-2', 3)
        self.assertEqual(
            [('zfs', 'destroy', 'vault/volume-2'),
             ('zfs', 'destroy', 'vault/volume-1@clone-volume-2')],
            self.execute.commands('zfs', 'destroy'))

    def test_clone_of_missing_snapshot(self):
        self.execute.on('zfs', 'clone', out=failure(
            "cannot open 'vault/volume-1@snapshot-x': dataset does not "
            "exist"))
        self.assertRaises(exception.NotFound, self.vault.clone_snapshot,
                          'volume-1', 'snapshot-x', 'volume-2', 1)
        self.assertEqual([], self.execute.commands('zfs', 'destroy'))

    def test_thick_clone_reserves(self):
        thick = vault.Vault(zfs.ZFS(self.execute), 'vault', sparse=False)
        self.execute.on('zfs', 'get', out='volsize\t%d\n' % GiB)
        thick.clone_snapshot('volume-1', 'snapshot-s', 'volume-2', 1)
        self.assertEqual(('zfs', 'clone', '-o', 'refreservation=auto',
                          'vault/volume-1@snapshot-s', 'vault/volume-2'),
                         self.execute.calls[0])

    def test_delete_snapshot_deferred_and_idempotent(self):
        self.vault.delete_snapshot('volume-1', 'snapshot-s')
        self.execute.on('zfs', 'destroy', out=GONE)
        self.vault.delete_snapshot('volume-1', 'snapshot-s')
        self.execute.on('zfs', 'get', out=GONE)
        self.vault.delete_snapshot('volume-1', 'snapshot-s')
        self.assertEqual(
            [('zfs', 'destroy', '-d', 'vault/volume-1@snapshot-s')] * 2,
            self.execute.commands('zfs', 'destroy'))

    def kept(self, synced_guid, owner='compute-1'):
        """volume-1@snapshot-s: sync point zv-3-0a1b2c3d kept, GUID 42.

        The volume is out on ``owner`` (None: back in the vault).
        """
        self.execute.on('zfs', 'get', '-Hp', '-o', 'property,value',
                        'guid,' + vault.SYNC_POINT,
                        out='guid\t42\n%s\tzv-3-0a1b2c3d\n'
                        % vault.SYNC_POINT)
        self.execute.on('zfs', 'get', '-Hp', '-o', 'property,value',
                        ','.join(lease.PROPS),
                        out='%s\t%s\n%s\t%s\n' % (
                            lease.SYNCED_GUID, synced_guid,
                            lease.OWNER, owner or '-'))

    def test_clone_of_a_sync_point_keeps_it_for_the_clone(self):
        # A clone of a volume out with a local replica (issue 21, 12: the
        # temporary clone of Cinder's backup of an in-use volume).
        self.snaps(('vault/volume-1@zv-3-0a1b2c3d', None))  # GUID 0
        self.execute.on('zfs', 'get', '-Hp', '-o', 'property,value',
                        'volsize', out='volsize\t%d\n' % GiB)
        self.vault.clone_sync_point('volume-1', 'zv-3-0a1b2c3d', '0',
                                    'volume-2', 1)
        self.assertEqual(
            [('zfs', 'set', vault.SYNC_POINT + '=zv-3-0a1b2c3d',
              'vault/volume-1@zv-3-0a1b2c3d'),
             ('zfs', 'rename', 'vault/volume-1@zv-3-0a1b2c3d',
              'vault/volume-1@clone-volume-2'),
             ('zfs', 'clone', 'vault/volume-1@clone-volume-2',
              'vault/volume-2')],
            [c for c in self.execute.calls if c[1] not in ('list', 'get')])

    def test_a_failed_clone_of_a_sync_point_gives_it_back(self):
        self.snaps(('vault/volume-1@zv-3-0a1b2c3d', None))
        self.kept(synced_guid='42')
        self.execute.on('zfs', 'clone', out=failure('out of space'))
        self.assertRaises(exception.ZFSVaultError,
                          self.vault.clone_sync_point, 'volume-1',
                          'zv-3-0a1b2c3d', '0', 'volume-2', 1)
        self.assertEqual(
            ('zfs', 'rename', 'vault/volume-1@clone-volume-2',
             'vault/volume-1@zv-3-0a1b2c3d'),
            self.execute.commands('zfs', 'rename')[-1])
        self.assertEqual([], self.execute.commands('zfs', 'destroy'))

    def test_the_last_clone_of_a_kept_sync_point_gone_it_is_released(self):
        # Back in the vault: its hold released and it is destroyed (a held
        # clone snapshot was skipped before, and stayed for ever).
        self.snaps(('vault/volume-1@clone-volume-2', None))
        self.kept(synced_guid='42', owner=None)
        self.vault._prune_clone_snapshots('vault/volume-1')
        self.assertEqual(
            [('zfs', 'release', 'zfsvault-base',
              'vault/volume-1@clone-volume-2'),
             ('zfs', 'destroy', '-d', 'vault/volume-1@clone-volume-2')],
            [c for c in self.execute.calls if c[1] not in ('list', 'get')])

    def test_keep_sync_point_renames_it_and_is_idempotent(self):
        self.snaps(('vault/volume-1@zv-3-0a1b2c3d', None))  # GUID 0
        self.vault.keep_sync_point('volume-1', 'zv-3-0a1b2c3d', '0',
                                   'snapshot-s')
        self.assertEqual(
            [('zfs', 'set', vault.SYNC_POINT + '=zv-3-0a1b2c3d',
              'vault/volume-1@zv-3-0a1b2c3d'),
             ('zfs', 'rename', 'vault/volume-1@zv-3-0a1b2c3d',
              'vault/volume-1@snapshot-s')], self.execute.calls[1:])
        self.snaps(('vault/volume-1@snapshot-s', None))
        self.vault.keep_sync_point('volume-1', 'zv-3-0a1b2c3d', '0',
                                   'snapshot-s')
        self.assertEqual(1, len(self.execute.commands('zfs', 'rename')))

    def test_keep_sync_point_of_another_guid_changes_nothing(self):
        self.snaps(('vault/volume-1@zv-3-0a1b2c3d', None))
        self.assertRaises(exception.NotFound, self.vault.keep_sync_point,
                          'volume-1', 'zv-3-0a1b2c3d', '99', 'snapshot-s')
        self.assertRaises(exception.InvalidInput, self.vault.keep_sync_point,
                          'volume-1', 'snapshot-t', '0', 'snapshot-s')
        self.assertEqual([], [c for c in self.execute.calls
                              if c[1] != 'list'])

    def test_delete_of_a_kept_base_gives_it_back(self):
        # The replica's next incremental builds on it: renamed back.
        self.kept(synced_guid='42')
        self.vault.delete_snapshot('volume-1', 'snapshot-s')
        self.assertEqual(
            [('zfs', 'inherit', vault.SYNC_POINT,
              'vault/volume-1@snapshot-s'),
             ('zfs', 'rename', 'vault/volume-1@snapshot-s',
              'vault/volume-1@zv-3-0a1b2c3d')], self.execute.calls[2:])

    def test_delete_of_a_kept_base_after_detach_destroys_it(self):
        # Back in the vault, no replica builds on it: renamed back, it
        # would stay for ever (issue 21, 7).
        self.kept(synced_guid='42', owner=None)
        self.vault.delete_snapshot('volume-1', 'snapshot-s')
        self.assertEqual(
            [('zfs', 'release', 'zfsvault-base', 'vault/volume-1@snapshot-s'),
             ('zfs', 'destroy', '-d', 'vault/volume-1@snapshot-s')],
            self.execute.calls[2:])

    def test_delete_of_a_kept_older_sync_point_releases_it(self):
        self.kept(synced_guid='77')
        self.vault.delete_snapshot('volume-1', 'snapshot-s')
        self.assertEqual(
            [('zfs', 'release', 'zfsvault-base', 'vault/volume-1@snapshot-s'),
             ('zfs', 'destroy', '-d', 'vault/volume-1@snapshot-s')],
            self.execute.calls[2:])

    def test_create_snapshot_exists_is_kept(self):
        self.execute.on('zfs', 'snapshot', out=failure(
            "cannot create snapshot 'vault/v@s': dataset already exists"))
        self.vault.create_snapshot('v', 's')

    def test_extend_refuses_shrink(self):
        self.execute.on('zfs', 'get', out='volsize\t%d\n' % (2 * GiB))
        self.assertRaises(exception.InvalidInput, self.vault.extend,
                          'volume-1', 1)
        self.assertEqual([], self.execute.commands('zfs', 'set'))
        self.vault.extend('volume-1', 2)  # same size: nothing to do
        self.assertEqual([], self.execute.commands('zfs', 'set'))
        self.vault.extend('volume-1', 5)
        self.assertEqual([('zfs', 'set', 'volsize=%d' % (5 * GiB),
                           'vault/volume-1')],
                         self.execute.commands('zfs', 'set'))

    def test_revert_refuses_newer_user_snapshot(self):
        self.snaps(('vault/v@snapshot-a', None), ('vault/v@snapshot-b', None))
        e = self.assertRaises(exception.HasDependents, self.vault.revert,
                              'v', 'snapshot-a')
        self.assertIn('vault/v@snapshot-b', e.message)
        self.assertEqual([], self.execute.commands('zfs', 'rollback'))

    def test_revert_refuses_newer_clone_snapshot_in_use(self):
        self.snaps(('vault/v@snapshot-a', None),
                   ('vault/v@clone-volume-9', 'vault/volume-9'))
        self.assertRaises(exception.HasDependents, self.vault.revert,
                          'v', 'snapshot-a')

    def test_revert_removes_unused_clone_snapshots_and_regrows(self):
        self.snaps(('vault/v@snapshot-a', None),
                   ('vault/v@clone-volume-9', None))
        self.execute.on('zfs', 'get', out='volsize\t%d\n' % GiB)
        self.vault.revert('v', 'snapshot-a', size_gib=2)
        self.assertEqual([('zfs', 'destroy', 'vault/v@clone-volume-9')],
                         self.execute.commands('zfs', 'destroy'))
        self.assertEqual([('zfs', 'rollback', 'vault/v@snapshot-a')],
                         self.execute.commands('zfs', 'rollback'))
        self.assertEqual([('zfs', 'set', 'volsize=%d' % (2 * GiB),
                           'vault/v')], self.execute.commands('zfs', 'set'))

    def test_revert_after_a_local_attach_removes_its_sync_points(self):
        # Snapshot, attach through a local replica, detach: the sync points
        # the replica left on the vault are restore points of ours, not a
        # user's snapshots (issue 21, 7: the revert was refused).
        self.snaps(('vault/v@snapshot-a', None),
                   ('vault/v@zv-1-0a1b2c3d', None),
                   ('vault/v@zv-2-1b2c3d4e', None))
        self.vault.revert('v', 'snapshot-a')
        self.assertEqual([('zfs', 'destroy', 'vault/v@zv-1-0a1b2c3d'),
                          ('zfs', 'destroy', 'vault/v@zv-2-1b2c3d4e')],
                         self.execute.commands('zfs', 'destroy'))
        self.assertEqual([('zfs', 'rollback', 'vault/v@snapshot-a')],
                         self.execute.commands('zfs', 'rollback'))

    def test_revert_missing_snapshot(self):
        self.snaps(('vault/v@snapshot-a', None))
        self.assertRaises(exception.NotFound, self.vault.revert, 'v',
                          'snapshot-z')

    def test_manage(self):
        self.execute.on('zfs', 'get', out='type\tvolume\nvolsize\t%d\n'
                        % (GiB + 1))
        self.assertEqual(2, self.vault.manageable_size_gib('image-1'))
        self.vault.manage('vault/image-1', 'volume-1')
        self.assertEqual([('zfs', 'rename', 'vault/image-1',
                           'vault/volume-1')],
                         self.execute.commands('zfs', 'rename'))

    def test_manage_refuses_filesystems_and_foreign_paths(self):
        self.execute.on('zfs', 'get', out='type\tfilesystem\nvolsize\t-\n')
        self.assertRaises(exception.InvalidInput, self.vault.manage,
                          'fs', 'volume-1')
        for ref in ('other/x', 'vault/a/b', '', None, '../x'):
            self.assertRaises(exception.InvalidInput, self.vault.manage,
                              ref, 'volume-1')
        self.assertEqual([], self.execute.commands('zfs', 'rename'))

    def test_stats_one_list(self):
        self.execute.on('zfs', 'list', out=(
            'vault\tfilesystem\t%d\t%d\t-\n'
            'vault/volume-1\tvolume\t100\t%d\t%d\n'
            'vault/volume-2\tvolume\t100\t%d\t%d\n'
            % (2 * GiB, 8 * GiB, 8 * GiB, 4 * GiB, 8 * GiB, 6 * GiB)))
        stats = self.vault.stats()
        self.assertEqual(vault.Stats(total=10 * GiB, free=8 * GiB,
                                     provisioned=10 * GiB, volumes=2),
                         stats)
        self.assertEqual(1, len(self.execute.calls))

    def test_manageable(self):
        self.execute.on('zfs', 'list', out=(
            'vault/image\t%d\t-\nvault/volume-2\t%d\tvault/image@s\n'
            % (GiB, 2 * GiB)))
        self.assertEqual(
            [vault.Manageable('image', GiB, None),
             vault.Manageable('volume-2', 2 * GiB, 'vault/image@s')],
            self.vault.manageable())

    def test_bad_configuration(self):
        for kwargs in ({'root': 'bad root'}, {'volblocksize': 1000},
                       {'compression': 'fast'}):
            args = dict({'root': 'vault'}, **kwargs)
            self.assertRaises(exception.InvalidInput, vault.Vault,
                              zfs.ZFS(self.execute), **args)
