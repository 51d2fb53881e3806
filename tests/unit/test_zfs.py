import testtools

from cinder_zfs_vault import exception
from cinder_zfs_vault import zfs
from tests.unit.fake_executor import failure
from tests.unit.fake_executor import RecordingExecutor


class ZFSTest(testtools.TestCase):

    def setUp(self):
        super(ZFSTest, self).setUp()
        self.execute = RecordingExecutor()
        self.zfs = zfs.ZFS(self.execute)

    def test_create_volume_sparse_with_properties(self):
        self.zfs.create_volume('vault/volume-a', 1073741824, sparse=True,
                               properties={'volblocksize': 16384,
                                           'compression': 'lz4'})
        self.assertEqual(
            [('zfs', 'create', '-s', '-o', 'compression=lz4',
              '-o', 'volblocksize=16384', '-V', '1073741824',
              'vault/volume-a')], self.execute.calls)

    def test_create_volume_thick(self):
        self.zfs.create_volume('vault/v', 8192, sparse=False)
        self.assertEqual([('zfs', 'create', '-V', '8192', 'vault/v')],
                         self.execute.calls)

    def test_list_parses_scripted_output(self):
        self.execute.on('zfs', 'list', out='vault\t1024\nvault/v\t2048\n')
        rows = self.zfs.list('vault', props=('name', 'used'),
                             types=('filesystem', 'volume'))
        self.assertEqual([{'name': 'vault', 'used': '1024'},
                          {'name': 'vault/v', 'used': '2048'}], rows)
        self.assertEqual(('zfs', 'list', '-Hp', '-o', 'name,used', '-t',
                          'filesystem,volume', '-r', 'vault'),
                         self.execute.calls[0])

    def test_snapshots_parsed_oldest_first(self):
        self.execute.on('zfs', 'list', out=(
            'vault/v@a\t10\t-\t0\t111\n'
            'vault/v@b\t12\tvault/c1,vault/c2\t1\t222\n'))
        snaps = self.zfs.snapshots('vault/v')
        self.assertEqual(['a', 'b'], [s['snap'] for s in snaps])
        self.assertEqual([], snaps[0]['clones'])
        self.assertEqual(['vault/c1', 'vault/c2'], snaps[1]['clones'])
        self.assertEqual(1, snaps[1]['userrefs'])
        self.assertIn('-s', self.execute.calls[0])

    def test_get(self):
        self.execute.on('zfs', 'get', out='volsize\t4096\norigin\t-\n')
        self.assertEqual({'volsize': '4096', 'origin': '-'},
                         self.zfs.get('vault/v', ('volsize', 'origin')))

    def test_error_classes(self):
        cases = [
            ("cannot open 'vault/x': dataset does not exist",
             exception.NotFound),
            ("cannot create 'vault/x': dataset already exists",
             exception.AlreadyExists),
            ("cannot destroy 'vault/x': dataset is busy", exception.Busy),
            ("cannot destroy 'vault/x@s': snapshot has dependent clones",
             exception.HasDependents),
            ("cannot destroy 'vault/x': volume has children",
             exception.HasDependents),
            ("cannot create 'vault/x': out of space", exception.OutOfSpace),
            ("cannot rollback to 'vault/x@a': more recent snapshots or "
             "bookmarks exist", exception.HasDependents),
            ("something else entirely", exception.CommandFailed),
        ]
        for stderr, cls in cases:
            self.execute.on('zfs', 'destroy', out=failure(stderr))
            e = self.assertRaises(cls, self.zfs.destroy, 'vault/x')
            self.assertIn(stderr, e.message)

    def test_bad_names_run_nothing(self):
        self.assertRaises(exception.InvalidInput, self.zfs.destroy,
                          '-r vault')
        self.assertRaises(exception.InvalidInput, self.zfs.clone,
                          'vault/x', 'vault/y')
        self.assertRaises(exception.InvalidInput, self.zfs.set, 'vault/x',
                          {'org.openstack.zfsvault:bad key': 1})
        self.assertRaises(exception.InvalidInput, self.zfs.set, 'vault/x',
                          {'org.openstack.zfsvault:k': 'a\nb'})
        self.assertEqual([], self.execute.calls)

    def test_set_in_one_command(self):
        self.zfs.set('vault/x', {'volsize': 2048,
                                 'org.openstack.zfsvault:frequency': 300})
        self.assertEqual([('zfs', 'set',
                           'org.openstack.zfsvault:frequency=300',
                           'volsize=2048', 'vault/x')], self.execute.calls)

    def test_destroy_flags(self):
        self.zfs.destroy('vault/x@s', defer=True)
        self.zfs.destroy('vault/x', recursive=True)
        self.assertEqual([('zfs', 'destroy', '-d', 'vault/x@s'),
                          ('zfs', 'destroy', '-r', 'vault/x')],
                         self.execute.calls)

    def test_exists(self):
        self.execute.on('zfs', 'get', out=failure(
            "cannot open 'vault/x': dataset does not exist"))
        self.assertFalse(self.zfs.exists('vault/x'))
        self.execute.on('zfs', 'get', out='type\tvolume\n')
        self.assertTrue(self.zfs.exists('vault/x'))

    def test_pool_get(self):
        self.execute.on('zpool', 'get', out='size\t100\nfree\t40\n')
        self.assertEqual({'size': '100', 'free': '40'},
                         self.zfs.pool_get('vault', ('size', 'free')))

    def test_get_local_keeps_only_local_values(self):
        self.execute.on('zfs', 'get', out=(
            'vault\torg.openstack.zfsvault:k\ta\tb\tlocal\n'
            'vault/v\torg.openstack.zfsvault:k\ta\tb\tinherited from vault\n'
            'vault/w\torg.openstack.zfsvault:k\t-\t-\n'))
        self.assertEqual({'vault': {'org.openstack.zfsvault:k': 'a\tb'},
                          'vault/v': {}, 'vault/w': {}},
                         self.zfs.get_local(['vault'],
                                            ['org.openstack.zfsvault:k'],
                                            depth=1))
        self.assertEqual(('zfs', 'get', '-Hp', '-d', '1', '-t',
                          'filesystem,volume', '-o',
                          'name,property,value,source',
                          'org.openstack.zfsvault:k', 'vault'),
                         self.execute.calls[0])
        self.assertRaises(exception.InvalidInput, self.zfs.get_local,
                          ['vault', '-r'], ['type'])
        self.assertRaises(exception.InvalidInput, self.zfs.get_local, [],
                          ['type'])
        self.assertEqual(1, len(self.execute.calls))


class LocalExecutorTest(testtools.TestCase):

    def test_command_killed_after_its_timeout(self):
        # Issue 8, defect 6: no command had a timeout; a wedged zfs held
        # its flow's lock (and in a cut-over the VM's device) for ever.
        import time

        from cinder_zfs_vault import executor
        start = time.monotonic()
        e = self.assertRaises(exception.CommandTimedOut,
                              executor.LocalExecutor(timeout=0.5),
                              'sleep', '30')
        self.assertLess(time.monotonic() - start, 15)
        self.assertEqual('sleep 30 did not finish in 0.5s; killed', str(e))
        self.assertIsInstance(e, exception.CommandFailed)

    def test_command_within_its_timeout(self):
        from cinder_zfs_vault import executor
        self.assertEqual(('ok\n', ''),
                         executor.LocalExecutor(timeout=5)('echo', 'ok'))
