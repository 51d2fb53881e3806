"""The agent loop: recovery first, then replicas watched and synced."""

import time
import uuid

import fixtures
import testtools

from cinder_zfs_vault.compute_host import service
from cinder_zfs_vault import exception
from cinder_zfs_vault import locking

A = str(uuid.UUID(int=1))
B = str(uuid.UUID(int=2))


class FakeScheduler(object):

    def __init__(self):
        self.watched = []
        self.running = []
        self.ticks = 0
        self.closed = None

    def add(self, vid):
        if vid not in self.watched:
            self.watched.append(vid)

    def remove(self, vid):
        self.watched.remove(vid)

    def status(self):
        return {'watched': list(self.watched), 'running': self.running}

    def tick(self):
        self.ticks += 1

    def close(self, timeout):
        self.closed = timeout


class FakeReplica(object):
    attributes = None

    def __init__(self, states):
        self.states = states

    def found(self):
        return sorted(self.states)

    def state(self, vid):
        return self.states[vid]


class FakeOrchestrator(object):

    def __init__(self, replica):
        self.replica = replica
        self.calls = []

    def recover(self):
        self.calls.append('recover')
        return [('seed', A, 'done')], [(B, 'warm replica kept', 'sync')]

    def sync(self, vid):
        self.calls.append(('sync', vid))

    flows = ()
    fail = None

    def in_flight(self):
        return list(self.flows)

    def seed(self, vid):
        self.calls.append(('seed', vid))
        if self.fail:
            raise self.fail

    def resume_orphan(self, vid):
        self.calls.append(('resume', vid))
        if self.fail:
            raise self.fail
        return 'seed'


class AgentTest(testtools.TestCase):

    def setUp(self):
        super(AgentTest, self).setUp()
        self.replica = FakeReplica({A: 'local', B: 'seeding'})
        self.orch = FakeOrchestrator(self.replica)
        self.sched = FakeScheduler()
        self.agent = service.Agent(self.orch, self.sched, tick=0.01)

    def test_start_recovers_then_watches_local_replicas(self):
        resumed, reconciled = self.agent.start()
        self.assertEqual(['recover'], self.orch.calls)
        self.assertEqual([('seed', A, 'done')], resumed)
        self.assertEqual([A], self.sched.watched)

    def test_watch_follows_replicas_coming_and_going(self):
        self.agent.watch()
        self.replica.states = {B: 'local'}  # A detached, B cut over
        self.assertEqual([B], self.agent.watch())
        self.assertEqual([B], self.sched.watched)

    def test_run_ticks_until_stopped_and_closes_the_scheduler(self):
        def tick():
            self.sched.ticks += 1
            if self.sched.ticks == 3:
                self.agent.stop()
        self.sched.tick = tick
        self.agent.run(close_timeout=5)
        self.assertEqual(3, self.sched.ticks)
        self.assertEqual(5, self.sched.closed)

    def test_a_failing_start_is_tried_again_not_a_crash(self):
        # Issue 8: a broken state at start (the compute pool not imported
        # yet) crashed the agent, and systemd restarted it into the same.
        calls = []

        def recover():
            calls.append('recover')
            if len(calls) == 1:
                raise RuntimeError('cannot open compute: no such pool')
            return [], []
        self.orch.recover = recover

        def tick():
            self.sched.ticks += 1
            self.agent.stop()
        self.sched.tick = tick
        self.agent.run(close_timeout=1)
        self.assertEqual(['recover', 'recover'], calls)
        self.assertEqual([A], self.sched.watched)

    def test_a_failing_tick_does_not_stop_the_agent(self):
        def tick():
            self.sched.ticks += 1
            if self.sched.ticks == 1:
                raise RuntimeError('vault unreachable')
            self.agent.stop()
        self.sched.tick = tick
        self.agent.run(close_timeout=1)
        self.assertEqual(2, self.sched.ticks)


class PickUpTest(testtools.TestCase):
    """What was left undone is picked up by the running agent.

    Issue 8, defect 9: an ``attach --no-seed`` or a killed CLI seed left
    the disk on its origin until the agent restarted.
    """

    def setUp(self):
        super(PickUpTest, self).setUp()
        self.now = 1000.0
        self.replica = FakeReplica({A: 'local', B: 'seeding'})
        self.orch = FakeOrchestrator(self.replica)
        self.agent = service.Agent(self.orch, FakeScheduler(),
                                   clock=lambda: self.now)

    def pick_up(self):
        started = self.agent.pick_up()
        for thread in list(self.agent._picking.values()):
            thread.join(10)
        return started

    def test_disk_left_on_its_origin_is_seeded_after_a_grace(self):
        self.assertEqual([], self.pick_up())  # a CLI may seed it itself
        self.now += service.PICK_UP_AFTER
        self.assertEqual([B], self.pick_up())
        self.assertEqual([('seed', B)], self.orch.calls)
        self.assertEqual({}, self.agent.failed)

    def test_flow_of_a_dead_process_is_resumed_at_once(self):
        self.orch.flows = [('seed', B, 'RUNNING')]
        self.assertEqual([B], self.pick_up())
        self.assertEqual([('resume', B)], self.orch.calls)

    def test_sync_this_agent_runs_is_not_picked_up(self):
        self.orch.flows = [('sync', A, 'RUNNING')]
        self.agent.scheduler.running = [A]
        self.assertEqual([], self.pick_up())
        self.assertEqual([], self.orch.calls)

    def test_flow_another_process_runs_is_left_to_it(self):
        self.orch.flows = [('seed', B, 'RUNNING')]
        self.orch.fail = locking.LockTimeout('held')
        self.assertEqual([B], self.pick_up())
        self.assertEqual({}, self.agent.failed)

    def test_failures_back_off_and_are_kept(self):
        self.pick_up()
        self.now += service.PICK_UP_AFTER
        self.orch.fail = exception.CommandFailed('vault unreachable')
        self.assertEqual([B], self.pick_up())
        self.assertEqual((1, self.now + 30, 'vault unreachable'),
                         self.agent.failed[B])
        self.now += 29
        self.assertEqual([], self.pick_up())
        self.now += 1
        self.assertEqual([B], self.pick_up())
        self.assertEqual(2, self.agent.failed[B][0])
        self.now += 60
        self.orch.fail = None
        self.assertEqual([B], self.pick_up())
        self.assertEqual({}, self.agent.failed)
        self.assertEqual(3, len(self.orch.calls))

    def test_fenced_disk_is_not_tried_again(self):
        from cinder_zfs_vault import lease as leaselib
        self.pick_up()
        self.now += service.PICK_UP_AFTER
        self.orch.fail = leaselib.Fenced('vault/volume-x: refused')
        self.assertEqual([B], self.pick_up())
        self.now += service.RETRY_MAX * 10
        self.assertEqual([], self.pick_up())

    def test_failures_are_kept_for_the_cli(self):
        path = self.useFixture(fixtures.TempDir()).join('problems.json')
        self.agent = service.Agent(self.orch, FakeScheduler(),
                                   clock=lambda: self.now, problems=path)
        self.assertEqual({}, service.read_problems(path))
        self.pick_up()
        self.now += service.PICK_UP_AFTER
        self.orch.fail = exception.CommandFailed('vault unreachable')
        self.pick_up()
        problem = service.read_problems(path)[B]
        self.assertEqual((1, 'vault unreachable'),
                         (problem['failures'], problem['error']))
        self.assertAlmostEqual(time.time() + 30, problem['retry_at'],
                               delta=5)
        self.now += 30
        self.orch.fail = None
        self.pick_up()
        self.assertEqual({}, service.read_problems(path))


class AgentCommandTest(testtools.TestCase):

    def test_main_runs_the_agent_and_sigterm_stops_it(self):
        import signal
        from unittest import mock

        from oslo_config import cfg

        from cinder_zfs_vault.cmd import agent as cmd

        made = {}

        class Runner(object):
            def __init__(self, orchestrator, tick, problems):
                made['tick'] = tick
                self.stopped = False

            def run(self):
                # What systemd does to stop the service.
                signal.raise_signal(signal.SIGTERM)
                made['stopped'] = self.stopped

            def stop(self):
                self.stopped = True

        self.addCleanup(signal.signal, signal.SIGTERM,
                        signal.getsignal(signal.SIGTERM))
        self.addCleanup(signal.signal, signal.SIGINT,
                        signal.getsignal(signal.SIGINT))
        with mock.patch.object(cmd.service, 'Agent', Runner), \
                mock.patch.object(cmd.cli_app, 'Backend') as backend, \
                mock.patch.object(cmd.agent, 'check_identity') as check, \
                mock.patch.object(cmd.logging, 'setup'):
            self.assertEqual(0, cmd.main(['--tick', '3'],
                                         conf=cfg.ConfigOpts()))
            check.assert_called_once_with(backend.return_value.engine)
            # Issue 21, 9: a name the vault does not know it by: no start.
            made.clear()
            check.side_effect = exception.InvalidInput('--host compute-2')
            self.assertEqual(1, cmd.main(['--tick', '3'],
                                         conf=cfg.ConfigOpts()))
            self.assertEqual({}, made)
            # The vault away: it starts (its replicas need their syncs).
            check.side_effect = exception.CommandFailed('vault unreachable')
            self.assertEqual(0, cmd.main(['--tick', '3'],
                                         conf=cfg.ConfigOpts()))
        self.assertEqual({'tick': 3.0, 'stopped': True}, made)
