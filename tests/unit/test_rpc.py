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

"""The driver's calls to an agent and the agent's answers, over
oslo.messaging's in-process ``fake`` driver: the real RPC server, client,
dispatcher and exception serialization, no broker."""

import threading

from oslo_config import cfg
from oslo_messaging import conffixture
import testtools

from cinder_zfs_vault.compute_host import agent as agentlib
from cinder_zfs_vault.compute_host.phases import seed
from cinder_zfs_vault.compute_host.phases import sync
from cinder_zfs_vault.compute_host import rpc as agent_rpc
from cinder_zfs_vault import exception
from cinder_zfs_vault import lease
from cinder_zfs_vault import rpc
from cinder_zfs_vault.vault_host import agents

VID = '5f0c6b3e-8f3a-4c4e-9d2a-1b7e2c9d0a11'


class FakeOrchestrator(object):
    """Records its calls.

    With each, whether a seed's stream begun during it would be
    unthrottled (a caller waits on the disk: seed.Urgency).
    """

    def __init__(self, urgency):
        self.calls = []
        self.refuse = None
        self.urgency = urgency

    def _unthrottled(self, volume_id):
        with self.urgency.stream(volume_id, 1024) as throttle:
            return throttle.rate is None

    def attach(self, volume_id):
        self.calls.append(('attach', volume_id))
        if self.refuse:
            raise self.refuse
        return '/dev/mapper/zvault-' + volume_id

    def detach(self, volume_id):
        self.calls.append(('detach', volume_id,
                           self._unthrottled(volume_id)))
        return sync.SyncResult('zv-4-0a1b2c3d', '123', 4096, 0.5)

    def sync(self, volume_id, rate=None, complete=False):
        self.calls.append(('sync', volume_id, rate, complete,
                           self._unthrottled(volume_id)))
        return sync.SyncResult('zv-5-0a1b2c3d', '124', 8192, 0.25)


class FakeAgent(object):
    """What the endpoint uses of service.Agent."""

    def __init__(self, host):
        self.replica = type('Replica', (), {'host': host,
                                            'urgency': seed.Urgency()})
        self.orchestrator = FakeOrchestrator(self.replica.urgency)
        self.seeding = []
        self.forgotten = []

    def seed_soon(self, volume_id):
        self.seeding.append(volume_id)

    def forget(self, volume_id):
        self.forgotten.append(volume_id)


class AgentRPCTest(testtools.TestCase):

    def setUp(self):
        super(AgentRPCTest, self).setUp()
        conf = cfg.ConfigOpts()
        agentlib.register_opts(conf)
        conf([], default_config_files=[])
        # Options oslo.messaging registers on the global CONF only (the
        # agent's and cinder-volume's own).
        self.useFixture(conffixture.ConfFixture(conf))
        # No transport_url set: no transport (its default is no cloud's).
        self.assertIsNone(rpc.transport(conf))
        conf.set_override('transport_url', 'fake:/')
        conf.set_override('host', 'compute-1', group='zfs_vault_agent')
        self.transport = rpc.transport(conf)
        self.agent = FakeAgent('compute-1')
        server = agent_rpc.server(conf, self.agent, self.transport)
        server.start()
        self.addCleanup(server.wait)
        self.addCleanup(server.stop)
        self.agents = agents.Agents(self.transport, ping_timeout=1,
                                    attach_timeout=5, detach_timeout=5)

    def test_attach_answers_the_device_and_seeds_behind(self):
        self.assertTrue(self.agents.alive('compute-1'))
        self.assertEqual('/dev/mapper/zvault-' + VID,
                         self.agents.attach('compute-1', VID))
        self.assertEqual([('attach', VID)], self.agent.orchestrator.calls)
        self.assertEqual([VID], self.agent.seeding)

    def test_detach_answers_the_final_sync_point(self):
        self.assertEqual({'snapshot': 'zv-4-0a1b2c3d', 'guid': '123',
                          'bytes': 4096, 'seconds': 0.5},
                         self.agents.detach('compute-1', VID))
        self.assertEqual([VID], self.agent.forgotten)
        # A seed still running goes on unthrottled: the detach waits on it.
        self.assertEqual([('detach', VID, True)],
                         self.agent.orchestrator.calls)

    def test_sync_answers_a_sync_point_taken_now_unthrottled(self):
        self.assertEqual({'snapshot': 'zv-5-0a1b2c3d', 'guid': '124',
                          'bytes': 8192, 'seconds': 0.25},
                         self.agents.sync('compute-1', VID))
        # A disk still seeding is seeded, unthrottled, and cut over first:
        # the snapshot waits for it rather than fails (issue 9).
        self.assertEqual([('sync', VID, 0, True, True)],
                         self.agent.orchestrator.calls)
        with self.agent.replica.urgency.stream(VID, 1024) as throttle:
            self.assertEqual(1024, throttle.rate)  # nobody waits now

    def test_refusal_arrives_as_the_core_error(self):
        self.agent.orchestrator.refuse = lease.LeaseHeld(
            'vault/volume-%s is leased to compute-2' % VID)
        e = self.assertRaises(lease.LeaseHeld, self.agents.attach,
                              'compute-1', VID)
        self.assertIn('leased to compute-2', e.message)
        self.assertEqual([], self.agent.seeding)

    def test_host_with_no_agent(self):
        self.assertFalse(self.agents.alive('compute-2'))
        e = self.assertRaises(agents.AgentUnreachable, self.agents.detach,
                              'compute-2', VID)
        self.assertIn('compute-2 did not answer ping in 1 s', e.message)
        self.assertIsInstance(e, exception.ZFSVaultError)
        self.assertEqual([], self.agent.orchestrator.calls)


class SeedSoonTest(testtools.TestCase):

    def test_seed_soon_starts_once(self):
        from cinder_zfs_vault.compute_host import service
        started = threading.Event()
        release = threading.Event()

        class Orchestrator(object):
            replica = None

            def seed(self, volume_id):
                started.set()
                release.wait(10)

        class Scheduler(object):
            removed = []

            def remove(self, volume_id):
                self.removed.append(volume_id)

        runner = service.Agent(Orchestrator(), scheduler=Scheduler())
        self.assertTrue(runner.seed_soon(VID))
        self.assertTrue(started.wait(10))
        self.assertFalse(runner.seed_soon(VID))
        release.set()
        for thread in list(runner._picking.values()):
            thread.join(10)
        self.assertEqual({}, runner._picking)
        runner.forget(VID)
        self.assertEqual([VID], Scheduler.removed)
