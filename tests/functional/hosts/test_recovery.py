"""kill -9 of the orchestrator in each phase, then a restart that finishes.

A child process (tools/flow_child.py) runs one flow with the SQLite logbook
and is SIGKILLed by the test at a marker it prints: mid-stream in the seed,
with the VM's device suspended in the cut-over, mid-stream in a sync and in
the final sync. A new Orchestrator in this process then recovers (resume,
then reconcile) and the test checks every write reached the vault and
nothing leaked.
"""

import os
import signal
import subprocess
import sys
import time

import fixtures

from cinder_zfs_vault.compute_host import flows
from cinder_zfs_vault.compute_host import service
from cinder_zfs_vault import protocol
from tests.functional.hosts import test_replica
from tools import labkit

MiB = 1024 * 1024
BULK = test_replica.BULK


class KillTest(test_replica.ReplicaTestCase):

    def setUp(self):
        super(KillTest, self).setUp()
        path = os.path.join(labkit.state_path(), 'logbook-%s.sqlite'
                            % self.id().rsplit('.', 1)[-1])
        self.url = 'sqlite:///' + path
        self.addCleanup(lambda: os.path.exists(path) and os.unlink(path))
        self.orch = flows.Orchestrator(self.engine, self.url)

    def kill_child(self, kind, volume_id, marker, rate='', stop=''):
        """Run a flow in a child; SIGKILL it once ``marker`` is printed.

        :param marker: callable(line) -> True at the line to kill on.
        :returns: the lines the child printed.
        """
        child = subprocess.Popen(
            [sys.executable, '-m', 'tools.flow_child', self.url,
             '%s:%s:%s:%s' % (kind, volume_id, rate, stop)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        lines = []
        try:
            for line in child.stdout:
                lines.append(line.strip().partition(' ')[2])
                if marker(lines[-1]):
                    child.send_signal(signal.SIGKILL)
                    break
        finally:
            child.kill()
            child.wait(60)
        self.assertEqual(-signal.SIGKILL, child.returncode, lines)
        self.assertFalse(any(line == 'finished' for line in lines), lines)
        return lines

    @staticmethod
    def past(nbytes):
        return lambda line: (line.startswith('progress ')
                             and int(line.split()[1]) >= nbytes)

    def recover(self, kind, volume_id):
        """A fresh orchestrator, as at a restart, finishes the flow."""
        self.assertEqual([(kind, volume_id)],
                         [f[:2] for f in self.orch.in_flight()])
        orch = flows.Orchestrator(labkit.make_engine(), self.url)
        resumed, reconciled = orch.recover()
        self.assertEqual([(kind, volume_id, 'done')], resumed)
        self.assertEqual([], orch.in_flight())
        return reconciled

    def big_disk(self):
        """A disk with ``BULK`` random bytes, so transfers take a while."""
        vol = self.disk()
        self.vault_random(vol, 128 * MiB, BULK)
        return vol

    def finish(self, vol, *writers):
        for w in writers:
            w.stop()
        self.orch.detach(vol.id)
        for w in writers:
            self.assertGreater(w.writes, 0)
            self.assertEqual([], self.vault_verify(vol, w))
        self.assertEqual('in vault', self.engine.state(vol.id))
        self.assertEqual([], labkit.sessions())

    def test_kill_during_seed(self):
        vol = self.big_disk()
        device = self.orch.attach(vol.id)
        w = self.writer(device, seed=1)
        self.kill_child('seed', vol.id, self.past(12 * MiB),
                        rate=4 * MiB)
        n = self.engine.names(vol.id)
        self.assertIsNotNone(labkit.resume_token_of(n.local))
        self.recover('seed', vol.id)
        self.assertEqual('local', self.engine.mapping(vol.id))
        self.finish(vol, w)

    def test_kill_during_cutover_with_device_suspended(self):
        vol = self.disk()
        device = self.orch.attach(vol.id)
        w = self.writer(device, seed=2)
        lines = self.kill_child('seed', vol.id,
                                lambda line: line == 'step cutover.suspended',
                                stop='cutover.suspended')
        self.assertIn('task CutOver RUNNING', lines)
        # The VM's writes wait in the device the dead process suspended:
        # the restart must let them go and finish the cut-over.
        self.assertTrue(self.engine.dm.suspended(self.engine.names(
            vol.id).dm))
        self.recover('seed', vol.id)
        self.assertEqual('local', self.engine.mapping(vol.id))
        writes = w.writes
        w.wait_writes(writes + 20, timeout=60)
        self.finish(vol, w)

    def test_kill_during_sync(self):
        vol = self.disk()
        device = self.orch.attach(vol.id)
        self.orch.seed(vol.id)
        labkit.write_at(device, 128 * MiB, os.urandom(BULK))
        w = self.writer(device, seed=3)
        self.kill_child('sync', vol.id, self.past(8 * MiB), rate=4 * MiB)
        n = self.engine.names(vol.id)
        self.assertIsNotNone(self.vault_lab.resume_token_of(n.vault))
        self.recover('sync', vol.id)
        lease = self.vault.leases.get(n.vault)
        newest = [s for s in self.vault.zfs.snapshots(n.vault)][-1]
        self.assertEqual(newest['guid'], lease.synced_guid)
        self.finish(vol, w)

    def test_kill_during_final_sync(self):
        vol = self.disk()
        device = self.orch.attach(vol.id)
        self.orch.seed(vol.id)
        data = os.urandom(BULK)
        labkit.write_at(device, 128 * MiB, data)
        self.kill_child('detach', vol.id, self.past(8 * MiB))
        n = self.engine.names(vol.id)
        self.assertFalse(self.engine.dm.exists(n.dm))
        self.assertTrue(self.engine.compute_zfs.exists(n.local))
        self.recover('detach', vol.id)
        self.assertEqual('in vault', self.engine.state(vol.id))
        self.assertEqual(labkit.digest(data), self.vault_lab.digest(
            self.zvol(vol), 128 * MiB, BULK))
        self.assertIsNone(self.vault.leases.get(n.vault).owner)


class AgentTest(test_replica.ReplicaTestCase):

    def test_agent_seeds_a_disk_left_on_its_origin_then_syncs_it(self):
        """The running agent picks up an unseeded disk, then syncs it.

        As ``zfs-vault attach --no-seed`` leaves a disk while the agent
        runs: it is seeded and cut over without an agent restart (issue 8,
        defect 9), then found local and synced when due.
        """
        self.useFixture(fixtures.MockPatchObject(service, 'PICK_UP_AFTER',
                                                 2))
        url = 'sqlite:///%s/logbook-agent.sqlite' % labkit.state_path()
        orch = flows.Orchestrator(self.engine, url)
        vol = self.disk()
        n = self.engine.names(vol.id)
        agent, thread = self.running_agent(orch)
        device = orch.attach(vol.id)
        labkit.write_at(device, 200 * MiB, b'scheduled' * 1000)
        self.wait_for(lambda: self.engine.state(vol.id) == 'local', 300,
                      'seed')  # seeded, cut over
        # The seed's sync point moved the synced GUID already: wait for a
        # sync point after it, landed.
        seed = self.engine.compute_zfs.snapshots(n.local)[0]['snap']

        def synced_after_seed():
            newest = self.vault.zfs.snapshots(n.vault)[-1]
            return newest['snap'] != seed and newest['guid'] == \
                self.vault.leases.get(n.vault).synced_guid
        self.wait_for(synced_after_seed, 300, 'sync')
        agent.stop()
        thread.join(120)
        self.assertEqual({}, agent.failed)
        newest = self.vault.zfs.snapshots(n.vault)[-1]['name']
        self.vault_lab.run('zfs', 'clone', newest, 'vault/agent-check')
        self.addCleanup(self.vault_lab.run, 'zfs', 'destroy',
                        'vault/agent-check')
        self.assertEqual(b'scheduled' * 1000, self.vault_lab.read_at(
            self.vault_lab.zvol('agent-check'), 200 * MiB, 9000))
        # The next one is due a frequency (the vault's 300 s) later.
        next_sync = self.vault.attributes.volume(n.vault).next_sync
        self.assertGreater(next_sync, time.time() + 200)


class LostDevicesTest(test_replica.ReplicaTestCase):
    """The devices go as at a reboot, between the seed and the cut-over.

    Issue 8, defect 1: the resumed cut-over found no device and destroyed
    the COW zvol, with every write since attach in it, unmerged.
    """

    def test_cow_writes_are_merged_after_the_devices_went(self):
        vol = self.disk()
        device = self.engine.attach(vol.id)
        w = self.writer(device, seed=4)
        self.engine.seed(vol.id)
        w.wait_writes(w.writes + 50, timeout=60)
        w.stop()
        n = self.engine.names(vol.id)
        # What a power cut leaves: no dm device and no iSCSI session; the
        # zvols and the vault's lease and export stay.
        labkit.run('udevadm', 'settle', '-t', '30')
        for name in (n.dm, n.dm_snap):
            labkit.run('dmsetup', 'remove', '--retry', name)
        labkit.run('iscsiadm', '-m', 'node', '-T',
                   protocol.origin_iqn(n.name), '-u')
        self.assertEqual([], labkit.sessions())
        engine = labkit.make_engine()  # a new process, as after a reboot
        self.assertIsNone(engine.mapping(vol.id))
        engine.cutover(vol.id)
        self.assertEqual('local', engine.mapping(vol.id))
        engine.detach(vol.id)
        self.assertGreater(w.writes, 0)
        self.assertEqual([], self.vault_verify(vol, w))
