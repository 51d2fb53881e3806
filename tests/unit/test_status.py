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

"""A disk's status (cinder_zfs_vault/status.py), from a fake engine alone."""

import json

import testtools

from cinder_zfs_vault import exception
from cinder_zfs_vault import lease as leaselib
from cinder_zfs_vault import status

A = '11111111-1111-4111-8111-111111111111'
B = '22222222-2222-4222-8222-222222222222'
HOST = 'compute-1'


class FakeEngine(object):
    """What status asks of a ReplicaEngine, recording the volumes asked."""

    host = HOST

    def __init__(self, states):
        self.states = states
        self.asked = []

    def state(self, volume_id):
        self.asked.append(('state', volume_id))
        state = self.states[volume_id]
        if isinstance(state, list):  # errors first: a disk that moves
            state = state.pop(0) if len(state) > 1 else state[0]
        if isinstance(state, Exception):
            raise state
        return state

    def unsynced_bytes(self, volume_id):
        self.asked.append(('unsynced_bytes', volume_id))
        return 4096

    def names(self, volume_id):
        class Names(object):
            device = '/dev/mapper/zvault-' + volume_id
        return Names()


def disk(owner=None, generation=0, last_sync=None):
    return {'dataset': 'vault/volume-x', 'size': 1024,
            'last_sync': last_sync,
            'lease': leaselib.FREE._replace(owner=owner,
                                            generation=generation)}


class StateTest(testtools.TestCase):

    def test_values_are_the_words_users_see(self):
        self.assertEqual('in vault', status.State.IN_VAULT)
        self.assertEqual('in vault', str(status.State.IN_VAULT))
        self.assertEqual('in vault', '%s' % status.State.IN_VAULT)
        self.assertEqual('"syncing"', json.dumps(status.State.SYNCING))
        self.assertIs(status.State.LOCAL, status.State('local'))

    def test_replica_and_device(self):
        self.assertEqual({'local', 'syncing', 'releasing'},
                         {s.value for s in status.State if s.has_replica})
        self.assertEqual({'seeding', 'local', 'direct', 'syncing'},
                         {s.value for s in status.State if s.has_device})


class DiskStatusTest(testtools.TestCase):

    def test_not_here_asks_the_engine_nothing(self):
        engine = FakeEngine({})
        free = status.disk_status(engine, A, disk(), False, 100)
        remote = status.disk_status(engine, B, disk('compute-2', 7, 40),
                                    False, 100)
        self.assertEqual((status.State.IN_VAULT, None, None, None),
                         (free.state, free.lag, free.unsynced_bytes,
                          free.device))
        self.assertEqual((status.State.REMOTE, 'compute-2', 7, 60),
                         (remote.state, remote.lease_owner,
                          remote.generation, remote.lag))
        self.assertEqual([], engine.asked)

    def test_here_the_engine_or_a_flow_names_the_state(self):
        engine = FakeEngine({A: 'local'})
        for flow, state in ((None, status.State.LOCAL),
                            ('sync', status.State.SYNCING),
                            ('detach', status.State.RELEASING)):
            got = status.disk_status(engine, A, disk(HOST, 3, 90), True,
                                     100, flow)
            self.assertEqual((state, 10, 4096), (got.state, got.lag,
                                                 got.unsynced_bytes))
            self.assertEqual(state.has_device, got.device is not None)

    def test_statuses_sorted_and_flows_read_only_with_a_disk_here(self):
        engine = FakeEngine({})
        engine.dm = type('DM', (), {'devices': lambda self, prefix: []})()
        engine.compute_root = 'compute'
        engine.compute_zfs = type('ZFS', (), {
            'list': lambda self, root, depth: []})()

        def in_flight():
            raise AssertionError('the logbook was opened')

        got = status.disk_statuses(engine, {B: disk(), A: disk()},
                                   in_flight, now=100)
        self.assertEqual([A, B], [s.volume_id for s in got])


class MovingDiskTest(testtools.TestCase):
    """A flow of the agent moves a disk while ``list`` looks at it.

    Between ``dmsetup info`` and ``dmsetup deps`` its device may go, or a
    sync point be pruned after it was listed: the next look sees it
    settled. Before, the first error failed the whole listing (zfs-vault
    list exited 1 while the agent recovered a rebooted host's disks).
    """

    def setUp(self):
        super(MovingDiskTest, self).setUp()
        self.patch(status, 'LOOK_PAUSE', 0)

    def test_looked_at_again_until_it_settles(self):
        gone = exception.CommandFailed('dmsetup deps: No such device')
        engine = FakeEngine({A: [gone, 'local']})
        got = status.disk_status(engine, A, disk(HOST, 3, 90), True, 100)
        self.assertEqual((status.State.LOCAL, 4096, None),
                         (got.state, got.unsynced_bytes, got.problem))
        self.assertEqual(2, engine.asked.count(('state', A)))

    def test_unreadable_disk_is_listed_with_why_and_the_others_too(self):
        broken = exception.NotFound('compute/volume-x@zv-3: no such dataset')
        engine = FakeEngine({A: broken, B: 'local'})
        got = {s.volume_id: s for s in (
            status.disk_status(engine, vid, disk(HOST, 3, 90), True, 100)
            for vid in (A, B))}
        self.assertEqual(
            (status.State.UNKNOWN, None, None,
             {'error': 'could not read its state here: compute/volume-x@'
                       'zv-3: no such dataset'}),
            (got[A].state, got[A].unsynced_bytes, got[A].device,
             got[A].problem))
        self.assertEqual(status.LOOK_TRIES, engine.asked.count(('state', A)))
        self.assertEqual(status.State.LOCAL, got[B].state)
        self.assertFalse(status.State.UNKNOWN.has_replica)
        self.assertFalse(status.State.UNKNOWN.has_device)

    def test_agent_problem_wins_over_the_look(self):
        engine = FakeEngine({A: exception.NotFound('gone')})
        problem = {'failures': 2, 'retry_at': 200, 'error': 'seed failed'}
        got = status.disk_status(engine, A, disk(HOST, 3, 90), True, 100,
                                 problem=problem)
        self.assertEqual((status.State.UNKNOWN, problem),
                         (got.state, got.problem))
