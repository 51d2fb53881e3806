"""The TaskFlow orchestration: logbook, revert, resume after kill -9."""

import os
import signal
import subprocess
import sys
import threading
import time
import uuid

import fixtures
import testtools

from cinder_zfs_vault.compute_host import flows
from cinder_zfs_vault.compute_host.phases import seed as seed_phase
from cinder_zfs_vault.compute_host.phases import sync as sync_phase
from cinder_zfs_vault import exception
from cinder_zfs_vault import locking

VOL = str(uuid.UUID(int=7))


class FakeReplica(object):
    """Records the engine steps a flow calls; ``fail`` or ``kill`` one."""

    def __init__(self, fail=None, kill=None, queued=None):
        self.calls = []
        self.fail = fail
        self.kill = kill
        self.queued = queued  # a sync not waited on waits here for a slot
        self.urgency = seed_phase.Urgency()

    def _step(self, name, *args):
        self.calls.append((name,) + args)
        if name == self.kill:
            os.kill(os.getpid(), signal.SIGKILL)
        if name == self.fail:
            raise exception.CommandFailed('%s failed' % name)

    def attach(self, volume_id):
        self._step('attach', volume_id)
        return '/dev/mapper/zvault-' + volume_id

    def seed(self, volume_id, progress=None):
        self._step('seed', volume_id)
        if progress:
            progress(10, 10)

    def cutover(self, volume_id):
        self._step('cutover', volume_id)
        return [0.5, 0.25]

    def complete(self, volume_id, progress=None):
        self._step('complete', volume_id)

    def sync(self, volume_id, rate=None, progress=None, preempted=None):
        self._step('sync', volume_id, rate)
        if self.queued and rate != 0:
            self.queued.set()
            while not preempted():  # as transfer.pipe asks it
                time.sleep(0.05)
            raise exception.Preempted('gave way')
        return sync_phase.SyncResult('compute/volume-%s@zv-1-abcdef12'
                                     % volume_id, '1', 0, 0.0)

    def unmap(self, volume_id):
        self._step('unmap', volume_id)
        return True

    def remap(self, volume_id):
        self._step('remap', volume_id)

    def retire(self, volume_id, snapshot):
        self._step('retire', volume_id, snapshot)


def child(url, kind, kill):
    """Run one flow in a child process that SIGKILLs itself at ``kill``."""
    orch = flows.Orchestrator(FakeReplica(kill=kill), url,
                              lock_path=os.path.dirname(url[10:]))
    getattr(orch, kind)(VOL)


class OrchestratorTest(testtools.TestCase):

    def setUp(self):
        super(OrchestratorTest, self).setUp()
        self.dir = self.useFixture(fixtures.TempDir()).path
        self.url = 'sqlite:///' + os.path.join(self.dir, 'logbook.sqlite')

    def orchestrator(self, replica):
        return flows.Orchestrator(replica, self.url, lock_path=self.dir)

    def test_flows_run_their_steps_and_leave_nothing_in_flight(self):
        replica = FakeReplica()
        orch = self.orchestrator(replica)
        seen = []
        self.assertEqual('/dev/mapper/zvault-' + VOL, orch.attach(VOL))
        self.assertEqual([0.5, 0.25], orch.seed(
            VOL, progress=lambda done, total: seen.append(done)))
        synced = orch.sync(VOL, rate=5)
        orch.detach(VOL)
        self.assertEqual([10], seen)
        self.assertTrue(synced.snapshot.endswith('@zv-1-abcdef12'))
        self.assertEqual(
            [('attach', VOL), ('seed', VOL), ('cutover', VOL),
             ('sync', VOL, 5), ('unmap', VOL), ('sync', VOL, 0),
             ('retire', VOL, synced.snapshot)], replica.calls)
        self.assertEqual([], orch.in_flight())

    def test_a_periodic_sync_waiting_for_a_slot_gives_way_to_a_detach(self):
        # Issue 21, 10: it held the disk's lock while the vault queued it;
        # the detach waited for it (cinder-volume's RPC gave up at 600 s).
        queued = threading.Event()
        replica = FakeReplica(queued=queued)
        orch = flows.Orchestrator(replica, self.url, lock_path=self.dir,
                                  lock_timeout=30)
        errors = []

        def periodic():
            try:
                orch.sync(VOL)
            except exception.Preempted as e:
                errors.append(e)
        thread = threading.Thread(target=periodic)
        thread.start()
        self.assertTrue(queued.wait(10))
        with replica.urgency.waiting(VOL):  # as the agent's RPC detach
            orch.detach(VOL)
        thread.join(10)
        self.assertEqual(1, len(errors))
        self.assertEqual([('sync', VOL, None), ('unmap', VOL),
                          ('sync', VOL, 0)], replica.calls[:3])
        self.assertEqual([], orch.in_flight())

    def test_sync_a_caller_waits_on_completes_the_replica_first(self):
        replica = FakeReplica()
        orch = self.orchestrator(replica)
        orch.sync(VOL, rate=0, complete=True)
        self.assertEqual([('complete', VOL), ('sync', VOL, 0)],
                         replica.calls)
        self.assertEqual([], orch.in_flight())

    def test_failed_detach_gives_the_device_back(self):
        replica = FakeReplica(fail='retire')
        orch = self.orchestrator(replica)
        self.assertRaises(exception.CommandFailed, orch.detach, VOL)
        self.assertEqual(['unmap', 'sync', 'retire', 'remap'],
                         [c[0] for c in replica.calls])
        self.assertEqual([], orch.in_flight())

    def test_bad_volume_id_runs_nothing(self):
        replica = FakeReplica()
        orch = self.orchestrator(replica)
        self.assertRaises(exception.InvalidInput, orch.attach, '../etc')
        self.assertEqual([], replica.calls)

    def _killed(self, kind, kill):
        proc = subprocess.run(
            [sys.executable, '-c',
             'from tests.unit import test_flows as t; t.child(%r, %r, %r)'
             % (self.url, kind, kill)],
            capture_output=True, timeout=120)
        self.assertEqual(-signal.SIGKILL, proc.returncode, proc.stderr)

    def test_killed_seed_resumes_at_the_seed(self):
        self._killed('seed', 'seed')
        replica = FakeReplica()
        orch = self.orchestrator(replica)
        self.assertEqual([('seed', VOL, 'RUNNING')], orch.in_flight())
        self.assertEqual([('seed', VOL, 'done')], orch.resume())
        self.assertEqual([('seed', VOL), ('cutover', VOL)], replica.calls)
        self.assertEqual([], orch.in_flight())

    def test_flow_of_a_killed_process_resumed_by_a_running_one(self):
        # A killed CLI seed: the agent, running, finishes it (issue 8,
        # defect 9); while a live process holds it, it is left alone.
        self._killed('seed', 'seed')
        replica = FakeReplica()
        orch = self.orchestrator(replica)
        with orch._lock(VOL):
            self.assertRaises(locking.LockTimeout, orch.resume_orphan, VOL)
        self.assertEqual([], replica.calls)
        self.assertEqual('seed', orch.resume_orphan(VOL))
        self.assertEqual([('seed', VOL), ('cutover', VOL)], replica.calls)
        self.assertEqual([], orch.in_flight())
        self.assertIsNone(orch.resume_orphan(VOL))

    def test_killed_detach_resumes_after_the_done_steps(self):
        self._killed('detach', 'retire')
        replica = FakeReplica()
        orch = self.orchestrator(replica)
        self.assertEqual([('detach', VOL, 'done')], orch.resume())
        # unmap and the final sync are in the logbook as done; the retire
        # gets the final snapshot the killed process recorded.
        self.assertEqual(
            [('retire', VOL, 'compute/volume-%s@zv-1-abcdef12' % VOL)],
            replica.calls)

    def test_resume_failing_again_is_reverted_and_reported(self):
        self._killed('sync', 'sync')
        orch = self.orchestrator(FakeReplica(fail='sync'))
        result = orch.resume()
        self.assertEqual(('sync', VOL), result[0][:2])
        self.assertIn('sync failed', result[0][2])
        self.assertEqual([], orch.in_flight())

    def test_on_task_sees_every_task_run(self):
        seen = []
        orch = flows.Orchestrator(FakeReplica(), self.url,
                                  lock_path=self.dir,
                                  on_task=lambda *a: seen.append(a))
        orch.seed(VOL)
        self.assertIn(('Seed', 'RUNNING'), seen)
        self.assertIn(('CutOver', 'SUCCESS'), seen)


def mass_attach(url, lock_path, threads):
    """``threads`` attach flows at once, as the agent's RPC pool runs them.

    :returns: the errors they raised (repr).
    """
    import threading
    orch = flows.Orchestrator(FakeReplica(), url, lock_path=lock_path)
    errors = []

    def attach():
        try:
            orch.attach(str(uuid.uuid4()))
        except Exception as e:
            errors.append(repr(e))
    workers = [threading.Thread(target=attach) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(300)
    return errors


class ConcurrentLogbookTest(testtools.TestCase):
    """Issue 21, 11: the logbook under the agent's concurrency."""

    def setUp(self):
        super(ConcurrentLogbookTest, self).setUp()
        self.dir = self.useFixture(fixtures.TempDir()).path
        self.url = 'sqlite:///' + os.path.join(self.dir, 'logbook.sqlite')

    def test_mass_attach_in_two_processes_leaves_no_flow_behind(self):
        # Two processes (the agent and a CLI) of 12 threads each: SQLite's
        # 'database is locked' failed flows and left them in the logbook.
        flows.Orchestrator(FakeReplica(), self.url, lock_path=self.dir)
        code = ('import sys; from tests.unit import test_flows; '
                'sys.exit(len(test_flows.mass_attach(%r, %r, 32)))'
                % (self.url, self.dir))
        other = subprocess.Popen([sys.executable, '-c', code])
        self.assertEqual([], mass_attach(self.url, self.dir, 32))
        self.assertEqual(0, other.wait(300))
        orch = flows.Orchestrator(FakeReplica(), self.url, lock_path=self.dir)
        self.assertEqual([], orch.in_flight())
