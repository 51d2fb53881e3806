import contextlib
import errno
import os
import sys
import threading
import time

import fixtures
import testtools

from cinder_zfs_vault.compute_host import dm
from cinder_zfs_vault.compute_host import names
from cinder_zfs_vault import exception
from cinder_zfs_vault import lease
from cinder_zfs_vault import protocol
from cinder_zfs_vault import sync_points
from cinder_zfs_vault import transfer
from cinder_zfs_vault import zfs
from tests.unit.fake_executor import failure
from tests.unit.fake_executor import RecordingExecutor

VID = '0c3d8d55-2aa7-4dc0-9e6c-8e2f2b1e2b11'


class LeaseTest(testtools.TestCase):

    def setUp(self):
        super(LeaseTest, self).setUp()
        self.execute = RecordingExecutor()
        self.leases = lease.Leases(zfs.ZFS(self.execute))
        # The external lock is lockutils' business; proven in the lab.
        self.leases.lock = lambda ds: contextlib.nullcontext()

    def props(self, owner='-', gen='-', guid='-'):
        self.execute.on('zfs', 'get', out=(
            '%s\t%s\n%s\t%s\n%s\t%s\n%s\t-\n'
            % (lease.OWNER, owner, lease.GENERATION, gen,
               lease.SYNCED_GUID, guid, lease.SYNCED_AT)))

    def test_acquire_free_bumps_generation(self):
        self.props(gen='4')
        held = self.leases.acquire('vault/v', 'compute-1')
        self.assertEqual(('compute-1', 5), (held.owner, held.generation))
        self.assertEqual([('zfs', 'set', lease.GENERATION + '=5',
                           lease.OWNER + '=compute-1', 'vault/v')],
                         self.execute.commands('zfs', 'set'))

    def test_acquire_is_idempotent_for_owner(self):
        self.props(owner='compute-1', gen='5')
        self.assertEqual(5, self.leases.acquire('vault/v',
                                                'compute-1').generation)
        self.assertEqual([], self.execute.commands('zfs', 'set'))

    def test_acquire_held_by_other_changes_nothing(self):
        self.props(owner='compute-2', gen='5')
        self.assertRaises(lease.LeaseHeld, self.leases.acquire, 'vault/v',
                          'compute-1')
        self.assertEqual([], self.execute.commands('zfs', 'set'))

    def test_bad_host_refused(self):
        for host in ('', 'a b', 'x,y', None):
            self.assertRaises(exception.InvalidInput, self.leases.acquire,
                              'vault/v', host)
        self.assertEqual([], self.execute.calls)

    def test_check_fences_old_generation(self):
        self.props(owner='compute-1', gen='6')
        self.assertRaises(lease.Fenced, self.leases.check, 'vault/v',
                          'compute-1', 5)
        self.leases.check('vault/v', 'compute-1', 6)

    def test_confirm_sync_refused_when_fenced(self):
        self.props(owner='compute-2', gen='7')
        self.assertRaises(lease.Fenced, self.leases.confirm_sync, 'vault/v',
                          'compute-1', 6, '123')
        self.assertEqual([], self.execute.commands('zfs', 'set'))

    def test_break_bumps_generation_and_clears_owner(self):
        self.props(owner='compute-1', gen='6', guid='99')
        broken = self.leases.break_lease('vault/v')
        self.assertEqual(('compute-1', 6, '99'),
                         (broken.owner, broken.generation,
                          broken.synced_guid))
        # The old owner is fenced: it may not take the disk back.
        self.assertEqual([('zfs', 'set', lease.FENCED + '=compute-1',
                           lease.GENERATION + '=7', 'vault/v')],
                         self.execute.commands('zfs', 'set'))
        self.assertEqual([('zfs', 'inherit', lease.OWNER, 'vault/v')],
                         self.execute.commands('zfs', 'inherit'))

    def test_release_idempotent(self):
        self.props(owner='-', gen='6')
        self.leases.release('vault/v', 'compute-1', 6)
        self.assertEqual([], self.execute.commands('zfs', 'inherit'))


class DeviceMapperTest(testtools.TestCase):

    def setUp(self):
        super(DeviceMapperTest, self).setUp()
        self.execute = RecordingExecutor()
        self.dm = dm.DeviceMapper(self.execute)

    def test_tables(self):
        self.assertEqual('0 2048 snapshot /dev/sdb /dev/zvol/c/v-cow P 16',
                         dm.snapshot_table(2048, '/dev/sdb',
                                           '/dev/zvol/c/v-cow'))
        self.assertEqual('0 2048 snapshot-merge /dev/zvol/c/v /dev/zvol/c/w'
                         ' P 16', dm.merge_table(2048, '/dev/zvol/c/v',
                                                 '/dev/zvol/c/w'))
        self.assertEqual('0 2048 linear /dev/zvol/c/v 0',
                         dm.linear_table(2048, '/dev/zvol/c/v'))
        for bad in ('sdb', '/dev/sdb 0 linear', '/dev/a\nb'):
            self.assertRaises(exception.InvalidInput, dm.linear_table, 8,
                              bad)

    def test_swap_resumes_even_if_reload_fails(self):
        self.execute.on('dmsetup', 'reload', out=failure('reload: bad'))
        self.assertRaises(exception.CommandFailed, self.dm.swap, 'zvault-1',
                          '0 8 linear /dev/x 0')
        self.assertEqual(['suspend', 'reload', 'resume'],
                         [c[1] for c in self.execute.calls])
        self.assertIn('--noudevsync', self.execute.calls[0])

    def test_merge_done(self):
        self.execute.on('dmsetup', 'status',
                        out='0 2097152 snapshot-merge 16/2097152 16\n')
        self.assertTrue(self.dm.merge_done('zvault-1'))
        self.execute.on('dmsetup', 'status',
                        out='0 2097152 snapshot-merge 4096/2097152 16\n')
        self.assertFalse(self.dm.merge_done('zvault-1'))
        self.assertRaises(exception.CommandFailed, self.dm.wait_merged,
                          'zvault-1', timeout=0.05, interval=0.01)

    def test_remove_gone_is_ok_busy_is_not(self):
        self.execute.on('dmsetup', 'remove', out=failure(
            'Device zvault-1 not found'))
        self.dm.remove('zvault-1')
        self.execute.on('dmsetup', 'remove', out=failure(
            'device-mapper: remove ioctl failed: Device or resource busy'))
        self.assertRaises(exception.Busy, self.dm.remove, 'zvault-1')

    def test_bad_name(self):
        self.assertRaises(exception.InvalidInput, self.dm.create, '-x',
                          '0 8 linear /dev/x 0')
        self.assertEqual([], self.execute.calls)


class FakeLibDevmapper(object):
    """libdevmapper's task calls, recorded; ``fail`` sets an errno."""

    def __init__(self, fail=0):
        self.calls = []
        self.fail = fail

    def dm_task_create(self, kind):
        self.calls.append(('create', kind))
        return 1

    def dm_task_set_name(self, task, name):
        self.calls.append(('name', name))
        return 1

    def dm_task_add_target(self, task, start, length, target, params):
        self.calls.append(('target', start, length, target, params))
        return 1

    def dm_task_skip_lockfs(self, task):
        self.calls.append(('nolockfs',))
        return 1

    def dm_task_run(self, task):
        return 0 if self.fail else 1

    def dm_task_get_errno(self, task):
        return self.fail

    def dm_task_get_info(self, task, info):
        info._obj.exists, info._obj.major, info._obj.minor = 1, 253, 7
        return 1

    def dm_task_destroy(self, task):
        self.calls.append(('destroy',))


class LibDMTest(testtools.TestCase):
    """The swap's steps in-process (issue 21: the cut-over's pause)."""

    def lib(self, fail=0):
        lib = dm.LibDM.__new__(dm.LibDM)
        lib._lib = FakeLibDevmapper(fail)
        lib._lock = threading.Lock()
        lib.timeout = 5
        return lib

    def test_swap_steps_run_no_process(self):
        execute = RecordingExecutor()
        lib = self.lib()
        mapper = dm.DeviceMapper(execute, lib=lib)
        mapper.suspend('zvault-1')
        mapper.create('zvault-1-merge', '0 2048 snapshot-merge /dev/zd0 '
                      '/dev/zd16 P 16', udev=False)
        self.assertEqual('253:7', mapper.devno('zvault-1-merge'))
        mapper.reload('zvault-1', '0 2048 linear 253:7 0')
        mapper.resume('zvault-1')
        self.assertEqual([], execute.calls)
        calls = lib._lib.calls
        self.assertEqual([('create', dm.LibDM.SUSPEND),
                          ('name', b'zvault-1'), ('nolockfs',),
                          ('destroy',)], calls[:4])
        self.assertIn(('target', 0, 2048, b'snapshot-merge',
                       b'/dev/zd0 /dev/zd16 P 16'), calls)
        self.assertIn(('target', 0, 2048, b'linear', b'253:7 0'), calls)
        # A create that waits for udev's node is still dmsetup's.
        mapper.create('zvault-2', '0 8 linear /dev/x 0')
        self.assertEqual('create', execute.calls[0][1])

    def test_errors_are_typed_and_the_task_freed(self):
        for code, error in ((errno.ENXIO, exception.NotFound),
                            (errno.EBUSY, exception.Busy),
                            (errno.EINVAL, exception.CommandFailed)):
            lib = self.lib(fail=code)
            self.assertRaises(error, dm.DeviceMapper(None, lib=lib).resume,
                              'zvault-1')
            self.assertEqual(('destroy',), lib._lib.calls[-1])


class HangingLibDevmapper(FakeLibDevmapper):
    """A task that runs until ``release`` is set (a suspend stuck on I/O)."""

    def __init__(self):
        super(HangingLibDevmapper, self).__init__()
        self.release = threading.Event()

    def dm_task_run(self, task):
        self.release.wait(30)
        return 1


class LibDMTimeoutTest(testtools.TestCase):

    def test_a_step_that_does_not_end_fails_in_time(self):
        # As dmsetup's processes had the executor's timeout: the flow
        # fails (and stays resumable) instead of hanging with the ioctl.
        lib = dm.LibDM.__new__(dm.LibDM)
        lib._lib = HangingLibDevmapper()
        lib._lock = threading.Lock()
        lib.timeout = 0.2
        self.addCleanup(lib._lib.release.set)
        mapper = dm.DeviceMapper(None, lib=lib)
        self.assertRaises(exception.CommandTimedOut, mapper.suspend,
                          'zvault-1')
        # The next step waits for the stuck one at most as long.
        self.assertRaises(exception.CommandTimedOut, mapper.resume,
                          'zvault-1')
        lib._lib.release.set()
        lib.timeout = 5
        mapper.resume('zvault-1')


class InUseTest(testtools.TestCase):

    def test_a_moments_open_count_is_not_use(self):
        # udev's probe after a writer's close holds the device briefly.
        execute = RecordingExecutor()
        execute.on('dmsetup', 'info', '-c', '--noheadings', '-o', 'open',
                   out='0\n')
        execute.on('dmsetup', 'info', '-c', '--noheadings', '-o', 'open',
                   out='1\n', times=2)
        self.assertFalse(dm.DeviceMapper(execute).in_use(
            'zvault-x', grace=5, interval=0.01))

    def test_an_open_count_that_lasts_is_use(self):
        execute = RecordingExecutor()
        execute.on('dmsetup', 'info', '-c', '--noheadings', '-o', 'open',
                   out='1\n')
        self.assertTrue(dm.DeviceMapper(execute).in_use(
            'zvault-x', grace=0.05, interval=0.01))


class TransferTest(testtools.TestCase):

    def test_send_argv(self):
        self.assertEqual(['zfs', 'send', '-L', '-c', 'v/a@s2'],
                         transfer.send_argv('v/a@s2'))
        self.assertEqual(['zfs', 'send', '-L', '-c', '-I', 'v/a@s1',
                          'v/a@s2'], transfer.send_argv('v/a@s2', 'v/a@s1'))
        self.assertEqual(['zfs', 'send', '-t', '1-abc-def'],
                         transfer.send_argv(token='1-abc-def'))
        self.assertRaises(exception.InvalidInput, transfer.send_argv,
                          token='1-abc; rm')
        self.assertEqual(['zfs', 'recv', '-s', '-u', 'c/v'],
                         transfer.recv_argv('c/v'))

    def throttle_sleeps(self, rate, nbytes, lift_after=None):
        """The sleeps of a Throttle(rate) given ``nbytes`` at once.

        No time passes but the sleeps; the rate is lifted after
        ``lift_after`` of them.
        """
        clock = [0.0]
        sleeps = []
        self.useFixture(fixtures.MockPatch(
            'cinder_zfs_vault.transfer.time.monotonic',
            side_effect=lambda: clock[0]))
        throttle = transfer.Throttle(rate)

        def sleep(seconds):
            sleeps.append(seconds)
            clock[0] += seconds
            if len(sleeps) == lift_after:
                throttle.rate = None  # a caller waits on the stream now
        self.useFixture(fixtures.MockPatch(
            'cinder_zfs_vault.transfer.time.sleep', side_effect=sleep))
        throttle(nbytes)
        return sleeps

    def test_throttle_paces_in_slices(self):
        self.assertEqual([1.0, 1.0, 0.5],
                         self.throttle_sleeps(1024 * 1024, 2.5 * 1024 * 1024))

    def test_throttle_lifted_mid_sleep_lets_the_stream_go(self):
        # A chunk of 1 MiB at 16 KiB/s is 64 s ahead: lifted after 2 s,
        # the stream goes on at once, not a minute later.
        self.assertEqual([1.0, 1.0], self.throttle_sleeps(
            16 * 1024, 1024 * 1024, lift_after=2))

    def test_throttle_paces_no_stream_below_the_vaults_floor(self):
        # 1 KiB/s would average under what the vault lets hold a slot
        # (protocol.MIN_STREAM_RATE): paced at MIN_PACE instead.
        self.assertEqual(2.0, sum(self.throttle_sleeps(
            1024, 2 * protocol.MIN_PACE)))

    def relay_of(self, writes, min_rate, window):
        """relay() of a stream that ``writes`` (seconds, bytes) in turn.

        :returns: (bytes moved or the CommandFailed, what arrived).
        """
        src, feed = os.pipe()
        dest_r, dest_w = os.pipe()

        def writer():
            with os.fdopen(feed, 'wb', buffering=0) as f:
                for pause, size in writes:
                    time.sleep(pause)
                    try:
                        f.write(b'x' * size)
                    except BrokenPipeError:
                        return
        thread = threading.Thread(target=writer)
        thread.start()
        try:
            moved = transfer.relay(src, os.fdopen(dest_w, 'wb'),
                                   stall_timeout=window, min_rate=min_rate)
        except exception.CommandFailed as e:
            moved = e
        finally:
            os.close(src)
            thread.join(10)
        with os.fdopen(dest_r, 'rb') as f:
            return moved, len(f.read())

    def test_a_trickle_fails_the_stream_though_bytes_keep_coming(self):
        # A byte every 0.2 s, each within the stall timeout (0.5 s): alive
        # by a stall timeout alone, and a slot of the vault held for ever.
        trickle = [(0.2, 1)] * 8
        moved, arrived = self.relay_of(trickle, 0, 0.5)
        self.assertEqual((8, 8), (moved, arrived))
        failed, arrived = self.relay_of(trickle, 1000, 0.5)
        self.assertIsInstance(failed, exception.CommandFailed)
        self.assertIn('stream too slow', failed.message)
        self.assertLess(arrived, 8)

    def test_a_stream_above_the_floor_passes(self):
        steady = [(0.1, 1000)] * 10  # ~10 KB/s
        self.assertEqual((10000, 10000), self.relay_of(steady, 1000, 0.3))

    def test_pipe_moves_bytes_and_reports(self):
        seen = []
        result = transfer.pipe(['head', '-c', '3000000', '/dev/zero'],
                               ['cat'], progress=seen.append)
        self.assertEqual(3000000, result.bytes)
        self.assertEqual(3000000, seen[-1])

    def test_pipe_failure_names_both_ends(self):
        e = self.assertRaises(exception.CommandFailed, transfer.pipe,
                              ['sh', '-c', 'echo oops >&2; exit 3'], ['cat'])
        self.assertIn('oops', e.message)

    def test_dead_receiver_fails_the_stream(self):
        # The receiver exits without reading (a diverged target, a refused
        # host key): the sender is stopped and the error names the receiver.
        refuse = ['sh', '-c', 'echo refused >&2; exit 1']
        e = self.assertRaises(exception.CommandFailed, transfer.pipe,
                              ['yes'], refuse)
        self.assertIn('refused', e.message)

    def test_dead_receiver_fails_under_eventlet(self):
        # In a monkey-patched process (cinder-volume) eventlet's os.write
        # retries EPIPE forever; the relay must still fail, not spin.
        import subprocess
        import sys
        code = ('import eventlet; eventlet.monkey_patch()\n'
                'from cinder_zfs_vault import exception, transfer\n'
                'try:\n'
                '    transfer.pipe(["yes"], ["true"])\n'
                'except exception.CommandFailed:\n'
                '    print("failed as it should")\n')
        out = subprocess.run([sys.executable, '-c', code], timeout=60,
                             capture_output=True, text=True)
        self.assertEqual('failed as it should\n', out.stdout, out.stderr)

    def test_stall_times_out(self):
        self.assertRaises(exception.CommandFailed, transfer.pipe,
                          ['sleep', '5'], ['cat'], stall_timeout=0.2)

    def test_receiver_that_stops_reading_times_out(self):
        e = self.assertRaises(exception.CommandFailed, transfer.pipe,
                              ['yes'], ['sleep', '5'], stall_timeout=0.3)
        self.assertIn('receiver stalled', e.message)

    def test_a_stream_waiting_for_its_slot_gives_way_when_preempted(self):
        # One process (as ssh is), queued for 30 s at the vault.
        send = [sys.executable, '-c', 'import sys, time; time.sleep(30); '
                'print(%r, file=sys.stderr)' % protocol.SLOT_GRANTED]
        asked = []

        def preempted():
            asked.append(time.monotonic())
            return len(asked) > 2
        start = time.monotonic()
        self.assertRaises(exception.Preempted, transfer.pipe, send, ['cat'],
                          granted_by='send', preempted=preempted)
        self.assertLess(time.monotonic() - start, 20)
        self.assertEqual(3, len(asked))

    def test_stream_queued_for_a_vault_slot_is_no_stall(self):
        # The vault endpoint holds a stream until a transfer slot is free,
        # then says so on stderr; the stall clock starts there. Found by
        # the 20-disks benchmark: seeds queued > stall_timeout were killed.
        granted = 'echo "%s" >&2; ' % protocol.SLOT_GRANTED
        send = ['sh', '-c', 'sleep 1; ' + granted + 'head -c 100000 '
                '/dev/zero']
        e = self.assertRaises(exception.CommandFailed, transfer.pipe,
                              send, ['cat'], stall_timeout=0.3)
        self.assertIn('stream stalled', e.message)
        self.assertEqual(100000, transfer.pipe(
            send, ['cat'], stall_timeout=0.3, granted_by='send').bytes)
        recv = ['sh', '-c', 'sleep 1; ' + granted + 'cat > /dev/null']
        bulk = ['head', '-c', '20000000', '/dev/zero']
        e = self.assertRaises(exception.CommandFailed, transfer.pipe,
                              bulk, recv, stall_timeout=0.3)
        self.assertIn('receiver stalled', e.message)
        self.assertEqual(20000000, transfer.pipe(
            bulk, recv, stall_timeout=0.3, granted_by='recv').bytes)

    def test_refusal_before_a_slot_keeps_its_class(self):
        refuse = ['sh', '-c', 'echo "%s: Busy: no transfer slot free" >&2; '
                  'exit 1' % protocol.PROGRAM]
        e = self.assertRaises(exception.Busy, transfer.pipe, refuse,
                              ['cat'], granted_by='send')
        self.assertEqual('no transfer slot free', str(e))
        e = self.assertRaises(exception.Busy, transfer.pipe, ['yes'],
                              refuse, granted_by='recv')

    def test_slot_never_granted_times_out(self):
        e = self.assertRaises(exception.CommandFailed, transfer.pipe,
                              ['sleep', '5'], ['cat'], granted_by='send',
                              slot_timeout=0.3)
        self.assertIn('granted no transfer slot in 0.3s', e.message)

    def test_unexpected_error_reaps_both_ends(self):
        # Issue 8, defect 7: only OSError and CommandFailed killed the
        # ends; any other error left both running (and then zombies).
        import subprocess
        started, real = [], subprocess.Popen

        def popen(*args, **kwargs):
            started.append(real(*args, **kwargs))
            return started[-1]
        self.useFixture(fixtures.MockPatchObject(
            transfer.subprocess, 'Popen', side_effect=popen))

        def progress(done):
            raise ValueError('a progress callback failed')
        self.assertRaises(ValueError, transfer.pipe, ['yes'],
                          ['sh', '-c', 'cat > /dev/null'], progress=progress)
        self.assertEqual(2, len(started))
        self.assertEqual([-9, -9], [c.returncode for c in started])

    def test_end_that_does_not_exit_after_its_stream_is_killed(self):
        # Issue 8, defect 6: pipe waited without limit for both ends to
        # exit after the end of the stream.
        e = self.assertRaises(
            exception.CommandFailed, transfer.pipe,
            ['head', '-c', '1000', '/dev/zero'],
            ['sh', '-c', 'cat > /dev/null; exec sleep 30'],
            stall_timeout=0.5)
        self.assertIn('an end still ran 0.5s after the stream ended',
                      e.message)

    def test_full_pool_is_out_of_space(self):
        # Issue 8, full pool: a clear error (the receive keeps its token).
        full = ['sh', '-c', 'cat > /dev/null; echo "cannot receive new '
                'filesystem stream: out of space" >&2; exit 1']
        e = self.assertRaises(exception.OutOfSpace, transfer.pipe,
                              ['head', '-c', '1000', '/dev/zero'], full)
        self.assertIn('out of space', e.message)

    def test_throttle_paces(self):
        import time
        start = time.monotonic()
        transfer.pipe(['head', '-c', '400000', '/dev/zero'], ['cat'],
                      rate=1000000)
        self.assertGreater(time.monotonic() - start, 0.3)


class NamesTest(testtools.TestCase):

    def test_names(self):
        n = names.Names(VID, 'vault', 'compute')
        self.assertEqual('vault/volume-' + VID, n.vault)
        self.assertEqual('compute/volume-' + VID, n.local)
        self.assertEqual('compute/volume-%s-cow' % VID, n.cow)
        self.assertEqual('/dev/mapper/zvault-' + VID, n.device)
        self.assertRaises(exception.InvalidInput, names.Names, 'x',
                          'vault', 'compute')

    def test_sync_points(self):
        snaps = [{'snap': 'snapshot-1', 'guid': '1'},
                 {'snap': 'zv-1-0a1b2c3d', 'guid': '2'},
                 {'snap': 'zv-7-0a1b2c3d', 'guid': '3'},
                 {'snap': 'zv-8-0a1b2c3d\n', 'guid': '4'}]
        self.assertEqual(['zv-1-0a1b2c3d', 'zv-7-0a1b2c3d'],
                         [s['snap'] for s in sync_points.of(snaps)])
        self.assertTrue(sync_points.next_name(snaps).startswith('zv-8-'))
        self.assertTrue(sync_points.next_name([]).startswith('zv-1-'))
        common = sync_points.newest_common(snaps, [{'guid': '2'},
                                                   {'guid': '9'}])
        self.assertEqual('zv-1-0a1b2c3d', common['snap'])
        self.assertIsNone(sync_points.newest_common(snaps, [{'guid': '0'}]))
