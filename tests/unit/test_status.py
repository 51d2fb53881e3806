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
        return self.states[volume_id]

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
            'lease': leaselib.Lease(owner, generation, None, None, ())}


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
