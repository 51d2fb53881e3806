# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at
#
#      http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS, WITHOUT
# WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied. See the
# License for the specific language governing permissions and limitations
# under the License.

"""The vault's authority: leases, fencing, exports, seeds, landing syncs."""

import os
import signal
import subprocess
import sys
from unittest import mock

import fixtures
from oslo_concurrency.fixture import lockutils as lock_fixture
import testtools

from cinder_zfs_vault import exception
from cinder_zfs_vault import lease as leaselib
from cinder_zfs_vault import protocol
from cinder_zfs_vault import sync_points
from cinder_zfs_vault import transfer
from cinder_zfs_vault.vault_host import authority
from cinder_zfs_vault.vault_host import origin
from tests.unit import fake_zfs

VID = '0c3d8d55-2aa7-4dc0-9e6c-8e2f2b1e2b11'
OTHER = '7f2c1a90-5b1e-4f7a-9d0e-3c2b1a4d5e6f'
DS = 'vault/volume-' + VID
IQN1 = 'iqn.2004-10.org.zfslab:compute-1'


class FakeExporter(object):

    def __init__(self):
        self.exports = {}

    def export(self, name, device, initiator, user, password,
               readonly=True):
        self.exports[name] = (device, initiator, readonly)
        return origin.Export('iqn.x:' + name, {'target_iqn': 'iqn.x:' + name,
                                               'access_mode': 'ro' if readonly
                                               else 'rw'})

    def unexport(self, name):
        self.exports.pop(name, None)

    def exported(self, name):
        return name in self.exports


class AuthorityTestCase(testtools.TestCase):

    def setUp(self):
        super(AuthorityTestCase, self).setUp()
        self.useFixture(lock_fixture.ExternalLockFixture())
        self.zfs = fake_zfs.FakeZFS()
        self.zfs.create('vault')
        self.zfs.create(DS)
        self.zfs.create('vault/volume-' + OTHER)
        self.exporter = FakeExporter()
        self.state = self.useFixture(fixtures.TempDir()).path
        self.vault = authority.Authority(self.zfs, self.exporter, 'vault',
                                         self.state)
        # As cinder-volume grants the disks it attaches to these hosts.
        for vid in (VID, OTHER):
            for host in ('compute-1', 'compute-2'):
                self.vault.grant(vid, host)


class GrantTest(AuthorityTestCase):
    """The vault leases a disk only to a host Cinder attached it to."""

    def test_a_host_not_granted_gets_nothing(self):
        before = dict(self.zfs.props[DS])
        # A compromised host with only its own key, asking for a free
        # volume no attachment gave it: refused, and nothing changed.
        error = self.assertRaises(leaselib.NotGranted, self.vault.lease,
                                  'compute-3', VID)
        self.assertIn('not attached to compute-3', str(error))
        self.assertEqual(before, self.zfs.props[DS])
        self.assertRaises(leaselib.Fenced, self.vault.seed, 'compute-3',
                          VID, 1)
        self.assertRaises(protocol.NotYours, self.vault.info, 'compute-3',
                          VID)
        self.vault.grant(VID, 'compute-3')
        self.assertEqual(1, self.vault.lease('compute-3', VID)['generation'])

    def test_revoked_host_cannot_lease_and_holder_keeps_its_grant(self):
        gen = self.vault.lease('compute-1', VID)['generation']
        # Its writes are there: the grant of the holder stays until it
        # gives the disk back (or is fenced).
        self.assertRaises(leaselib.LeaseHeld, self.vault.revoke, VID,
                          'compute-1')
        self.vault.release('compute-1', VID, gen)
        self.assertEqual(('compute-2',), self.vault.revoke(VID, 'compute-1'))
        self.assertEqual(('compute-2',), self.vault.revoke(VID, 'compute-1'))
        self.assertRaises(leaselib.NotGranted, self.vault.lease,
                          'compute-1', VID)
        self.assertEqual((), self.vault.revoke(VID, 'compute-2'))
        self.assertNotIn(leaselib.GRANTED, self.zfs.props[DS])

    def test_an_abandoned_attach_is_marked_until_attached_again(self):
        # Issue 21, 8: Cinder gave up on compute-1's attach, which took the
        # lease anyway: its grant stays (its writes may be there), marked.
        self.vault.lease('compute-1', VID)
        self.assertRaises(leaselib.LeaseHeld, self.vault.revoke, VID,
                          'compute-1', abandon=True)
        self.assertEqual('compute-1', self.vault.leases.get(DS).abandoned)
        # Cinder attaches it there again: no longer abandoned.
        self.vault.grant(VID, 'compute-1')
        self.assertIsNone(self.vault.leases.get(DS).abandoned)

    def test_the_lease_records_the_mode_it_was_taken_in(self):
        self.vault.lease('compute-1', VID)
        self.assertEqual('sync', self.vault.leases.get(DS).mode)


class LeaseTest(AuthorityTestCase):

    def test_two_hosts_one_lease(self):
        self.assertEqual(1, self.vault.lease('compute-1', VID)['generation'])
        self.assertRaises(leaselib.LeaseHeld, self.vault.lease, 'compute-2',
                          VID)
        # The owner asking again keeps its generation.
        self.assertEqual(1, self.vault.lease('compute-1', VID)['generation'])

    def test_fenced_host_cannot_take_the_disk_back(self):
        gen = self.vault.lease('compute-1', VID)['generation']
        self.vault.export('compute-1', IQN1, VID, gen)
        broken = self.vault.break_lease(VID)
        self.assertEqual(('compute-1', gen), (broken.owner,
                                              broken.generation))
        # The break took its export (and so its iSCSI session) back.
        self.assertEqual({}, self.exporter.exports)
        self.assertRaises(leaselib.Fenced, self.vault.lease, 'compute-1',
                          VID)
        self.assertEqual(gen + 2,
                         self.vault.lease('compute-2', VID)['generation'])
        self.vault.release('compute-2', VID, gen + 2)
        self.vault.allow(VID, 'compute-1')  # the operator's word
        self.assertEqual(gen + 3,
                         self.vault.lease('compute-1', VID)['generation'])

    def test_a_break_whose_revoke_fails_can_be_retried(self):
        # Issue 21, 6: the owner was cleared before the export was
        # revoked; a revoke that failed left the fenced host its export
        # while the lease showed free, so no retry broke it again.
        gen = self.vault.lease('compute-1', VID)['generation']
        self.vault.export('compute-1', IQN1, VID, gen)
        with mock.patch.object(self.exporter, 'unexport',
                               side_effect=OSError('configfs busy')):
            self.assertRaises(OSError, self.vault.break_lease, VID)
        self.assertEqual('compute-1', self.vault.leases.get(DS).owner)
        self.assertRaises(leaselib.Fenced, self.vault.seed, 'compute-1',
                          VID, gen)
        self.assertIn('volume-' + VID, self.exporter.exports)
        self.vault.break_lease(VID)  # the force detach again
        self.assertEqual({}, self.exporter.exports)
        self.assertIsNone(self.vault.leases.get(DS).owner)

    def test_requests_need_the_lease(self):
        gen = self.vault.lease('compute-1', VID)['generation']
        for call in (lambda: self.vault.export('compute-2', IQN1, VID, gen),
                     lambda: self.vault.seed('compute-2', VID, gen),
                     lambda: self.vault.send_argv('compute-2', VID, gen,
                                                  snap='zv-1-0123abcd'),
                     lambda: self.vault.release('compute-2', VID, gen),
                     lambda: self.vault.export('compute-1', IQN1, VID,
                                               gen + 1)):
            self.assertRaises(leaselib.Fenced, call)
        self.assertRaises(protocol.NotYours, self.vault.info, 'compute-2',
                          VID)
        self.assertRaises(protocol.NotYours, self.vault.info, 'compute-1',
                          OTHER)
        self.assertEqual({}, self.exporter.exports)

    def test_export_is_for_the_hosts_initiator_read_only(self):
        gen = self.vault.lease('compute-1', VID)['generation']
        props = self.vault.export('compute-1', IQN1, VID, gen)
        self.assertEqual('ro', props['access_mode'])
        self.assertEqual(('/dev/zvol/' + DS, IQN1, True),
                         self.exporter.exports['volume-' + VID])
        self.assertRaises(exception.InvalidInput, self.vault.export,
                          'compute-1', 'iqn.x -o y', VID, gen)

    def test_nosync_export_is_read_write(self):
        self.vault.attributes.set_volume(DS, sync_mode='nosync')
        gen = self.vault.lease('compute-1', VID)['generation']
        self.assertEqual('rw', self.vault.export('compute-1', IQN1, VID,
                                                 gen)['access_mode'])


class InfoTest(AuthorityTestCase):

    def test_info_for_the_owner_in_three_reads(self):
        self.vault.lease('compute-1', VID)
        self.zfs.snapshot(DS + '@zv-1-0123abcd')
        self.zfs.props[DS]['receive_resume_token'] = '1-abc-def'
        reads = []
        for name in ('get', 'get_local', 'snapshots'):
            self.useFixture(fixtures.MockPatchObject(
                self.zfs, name, side_effect=lambda *a, _f=getattr(
                    self.zfs, name), **k: reads.append(a) or _f(*a, **k)))
        info = self.vault.info('compute-1', VID)
        self.assertEqual(3, len(reads))  # it was six: one per question
        self.assertEqual({'owner': 'compute-1', 'generation': 1,
                          'synced_guid': None}, info['lease'])
        self.assertEqual((1 << 30, '1-abc-def', 'sync', 300),
                         (info['volsize'], info['resume_token'],
                          info['sync_mode'], info['frequency']))
        self.assertEqual(['zv-1-0123abcd'],
                         [snap['snap'] for snap in info['snapshots']])
        self.assertRaises(protocol.NotYours, self.vault.info, 'compute-2',
                          VID)


class SeedTest(AuthorityTestCase):

    def test_seed_reuses_an_unwritten_sync_point_only(self):
        gen = self.vault.lease('compute-1', VID)['generation']
        first = self.vault.seed('compute-1', VID, gen)
        self.assertTrue(sync_points.is_sync_point(first['snap']))
        self.assertEqual(first['guid'],
                         self.vault.leases.get(DS).synced_guid)
        self.assertEqual(first, self.vault.seed('compute-1', VID, gen))
        # Written after it (non-sync mode, a revert, Cinder's own iSCSI):
        # a new sync point, so the replica never mixes old and new blocks.
        self.zfs.props[DS]['written'] = '8192'
        second = self.vault.seed('compute-1', VID, gen)
        self.assertNotEqual(first['snap'], second['snap'])
        self.assertTrue(second['snap'].startswith('zv-2-'))

    def test_resume_token_of_another_disk_refused(self):
        gen = self.vault.lease('compute-1', VID)['generation']
        self.zfs.dry_run_output = ('resume token contents:\nnvlist version: '
                                   '0\n\ttoname = vault/volume-%s@zv-1-'
                                   '0123abcd\n' % OTHER)
        self.assertRaises(protocol.NotYours, self.vault.send_argv,
                          'compute-1', VID, gen, token='1-abc-12-789')
        self.zfs.dry_run_output = ('\ttoname = %s@zv-1-0123abcd\n' % DS)
        self.assertEqual(['zfs', 'send', '-t', '1-abc-12-789'],
                         self.vault.send_argv('compute-1', VID, gen,
                                              token='1-abc-12-789'))

    def test_send_only_sync_points(self):
        gen = self.vault.lease('compute-1', VID)['generation']
        for snap in ('snapshot-x', 'zv-1-0123abcd@x', '-R', 'zv-1-0123abcd\n'):
            self.assertRaises(exception.InvalidInput, self.vault.send_argv,
                              'compute-1', VID, gen, snap=snap)

    def test_hostile_resume_tokens_refused_before_zfs(self):
        # The token's own check took any Unicode letter and a leading '-'.
        gen = self.vault.lease('compute-1', VID)['generation']
        self.zfs.dry_run_output = '\ttoname = %s@zv-1-0123abcd\n' % DS
        for token in ('-v', '1-\u00e9-12-789', '1-abc-12-789\n',
                      '1-abc-12-789 -v'):
            self.assertRaises(exception.InvalidInput, self.vault.send_argv,
                              'compute-1', VID, gen, token=token)


class FakeReceive(object):
    """A ``zfs recv`` stand-in: a real process (so it can be killed)."""

    def __init__(self, test, lands=True):
        self.test = test
        self.lands = lands
        self.child = None

    def start(self, argv):
        # argv of a real receive, so the landing's /proc check knows it.
        self.child = subprocess.Popen(
            [sys.executable, '-c', 'import sys, time; time.sleep(60)']
            + argv, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
        return self.child

    def feed(self, child):
        child.stdin.close()
        if self.test.break_in_flight:
            # The break must stop the receive itself: nothing else will.
            self.test.vault.break_lease(VID)
            return
        if self.lands and child.poll() is None:
            self.test.zfs.snapshot(DS + '@zv-2-aaaabbbb')
            child.terminate()
            child.wait()
            child.returncode = 0
        elif child.poll() is None:
            child.terminate()


class LandingTest(AuthorityTestCase):
    """A sync lands only under the lease generation it was sent under."""

    break_in_flight = False

    def setUp(self):
        super(LandingTest, self).setUp()
        self.gen = self.vault.lease('compute-1', VID)['generation']
        self.seed = self.vault.seed('compute-1', VID, self.gen)

    def points(self):
        """The vault zvol's snapshots (names and GUIDs)."""
        return [(s['snap'], s['guid']) for s in self.zfs.snapshots(DS)]

    def receive(self, recv, guid=None):
        return self.vault.receive('compute-1', VID, self.gen, recv.start,
                                  recv.feed, expect_guid=guid)

    def test_sync_lands_and_moves_the_synced_guid(self):
        landed = self.receive(FakeReceive(self))
        self.assertEqual('zv-2-aaaabbbb', landed['snap'])
        self.assertEqual(landed['guid'],
                         self.vault.leases.get(DS).synced_guid)
        self.assertEqual([], os.listdir(os.path.join(self.state,
                                                     'landing')))

    def test_full_vault_pool_is_out_of_space_and_nothing_lands(self):
        recv = FakeReceive(self, lands=False)

        def full(argv):
            recv.child = subprocess.Popen(
                ['sh', '-c', 'cat > /dev/null; echo "cannot receive '
                 'incremental stream: out of space" >&2; exit 1'],
                stdin=subprocess.PIPE, stderr=subprocess.PIPE)
            return recv.child
        recv.start = full
        recv.feed = lambda child: child.stdin.close()
        before = self.points()
        self.assertRaises(exception.OutOfSpace, self.receive, recv)
        self.assertEqual(before, self.points())
        self.assertEqual(self.seed['guid'],
                         self.vault.leases.get(DS).synced_guid)

    def test_receiver_gone_says_how_it_ended(self):
        # A receive that ends before its stream does breaks the relay's
        # pipe (EPIPE) and says nothing on stderr: its own status is all
        # there is to tell an OOM kill from a crash.
        recv = FakeReceive(self, lands=False)

        def dies(argv):
            recv.child = subprocess.Popen(
                ['sh', '-c', 'kill -9 $$'], stdin=subprocess.PIPE,
                stderr=subprocess.PIPE)
            return recv.child

        def feed(child):
            child.wait()  # gone before the stream starts
            r, w = os.pipe()
            os.write(w, b'x' * 4096)
            os.close(w)
            try:
                transfer.relay(r, child.stdin, stall_timeout=5)
            finally:
                os.close(r)
        recv.start = dies
        recv.feed = feed
        before = self.points()
        e = self.assertRaises(exception.CommandFailed, self.receive, recv)
        self.assertIn('Broken pipe', str(e))
        self.assertIn('zfs recv killed by signal 9', str(e))
        self.assertEqual(before, self.points())
        self.assertEqual(self.seed['guid'],
                         self.vault.leases.get(DS).synced_guid)

    def test_stalled_receiver_ends_with_its_own_error(self):
        # Its input closed after a stall, a receive reports the incomplete
        # stream itself; it is not killed first.
        recv = FakeReceive(self, lands=False)

        def waits(argv):
            recv.child = subprocess.Popen(
                ['sh', '-c', 'cat > /dev/null; echo "cannot receive: '
                 'incomplete stream" >&2; exit 1'],
                stdin=subprocess.PIPE, stderr=subprocess.PIPE)
            return recv.child

        def feed(child):
            child.stdin.close()
            raise exception.CommandFailed('stream stalled')
        recv.start = waits
        recv.feed = feed
        e = self.assertRaises(exception.CommandFailed, self.receive, recv)
        self.assertIn('incomplete stream', str(e))
        self.assertIn('zfs recv exited with status 1', str(e))

    def test_sync_refused_before_it_starts_when_fenced(self):
        self.vault.break_lease(VID)
        recv = FakeReceive(self)
        self.assertRaises(leaselib.Fenced, self.receive, recv)
        self.assertIsNone(recv.child)  # no zfs recv ever ran

    def test_break_while_stream_in_flight_kills_and_undoes_it(self):
        self.break_in_flight = True
        recv = FakeReceive(self, lands=False)
        before = self.points()
        self.assertRaises(leaselib.Fenced, self.receive, recv)
        self.assertEqual(-signal.SIGKILL, recv.child.wait())
        self.assertIn(('abort_receive', DS), self.zfs.calls)
        self.assertEqual(before, self.points())
        self.assertEqual(self.seed['guid'],
                         self.vault.leases.get(DS).synced_guid)

    def test_break_after_receive_before_landing_rolls_it_back(self):
        recv = FakeReceive(self)
        before = self.points()
        real_land = self.vault.landing.land

        def land_after_a_break(*args, **kwargs):
            # The receive finished; the break wins the lock first.
            self.vault.break_lease(VID)
            return real_land(*args, **kwargs)

        self.vault.landing.land = land_after_a_break
        self.assertRaises(leaselib.Fenced, self.receive, recv)
        self.assertEqual(before, self.points())
        self.assertIn(('rollback', DS + '@' + self.seed['snap']),
                      self.zfs.calls)

    def test_hostile_guids_refused_before_a_receive(self):
        # str.isdigit() took Arabic-Indic and superscript digits.
        for guid in ('\u0661\u0662', '\u00b2', '1\n', str(2 ** 64)):
            recv = FakeReceive(self)
            self.assertRaises(exception.InvalidInput, self.receive, recv,
                              guid=guid)
            self.assertIsNone(recv.child)  # no zfs recv ever ran

    def test_landed_guid_must_be_the_senders(self):
        self.assertRaises(exception.Diverged, self.receive,
                          FakeReceive(self), guid='1')
        self.assertEqual(self.seed['guid'],
                         self.vault.leases.get(DS).synced_guid)

    def test_confirm_by_guid(self):
        landed = self.receive(FakeReceive(self))
        self.assertTrue(self.vault.confirm('compute-1', VID, self.gen,
                                           landed['snap'], landed['guid']))
        self.assertRaises(exception.Diverged, self.vault.confirm,
                          'compute-1', VID, self.gen, landed['snap'], '1')


class ScheduleTest(AuthorityTestCase):

    def test_only_the_hosts_disks(self):
        self.vault.lease('compute-1', VID)
        self.vault.lease('compute-2', OTHER)
        answer = self.vault.schedule('compute-1')
        self.assertEqual([VID], list(answer['volumes']))
        self.assertEqual(2, answer['vault']['sync_workers'])
        self.vault.set_next_sync('compute-1', VID, 2000000000)
        self.assertRaises(protocol.NotYours, self.vault.set_next_sync,
                          'compute-1', OTHER, 2000000000)
