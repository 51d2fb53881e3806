import collections
import threading
import time

import testtools

from cinder_zfs_vault import attributes
from cinder_zfs_vault.compute_host import scheduler
from cinder_zfs_vault import exception
from cinder_zfs_vault import lease as leaselib

NS = 'org.openstack.zfsvault:'
WAIT = 5  # seconds; every wait in these tests ends


def vid(n):
    return '00000000-0000-4000-8000-%012d' % n


A, B, C, D, E, F = (vid(n) for n in range(1, 7))
ALL = (A, B, C, D, E, F)


def volume(frequency=300, next_sync=None, mode='sync'):
    return attributes.VolumeAttributes(frequency, next_sync, 0, 0, mode)


class MemoryZFS(object):
    """The part of the ZFS layer Attributes uses, in memory."""

    def __init__(self, root='vault', volumes=ALL):
        self.root = root
        self.props = {root: {}}
        for v in volumes:
            self.props['%s/volume-%s' % (root, v)] = {}
        self.lock = threading.Lock()
        self.fail_get = None
        self.fail_set = None

    def get_local(self, names, props, depth=None):
        if self.fail_get:
            raise self.fail_get
        with self.lock:
            names = list(names)
            if depth:
                names += [d for d in self.props
                          if d.startswith(names[0] + '/')]
            result = {}
            for name in names:
                if name not in self.props:
                    raise exception.NotFound(name)
                result[name] = {p: v for p, v in self.props[name].items()
                                if p in props}
            return result

    def set(self, name, props):
        if self.fail_set:
            raise self.fail_set
        with self.lock:
            if name not in self.props:
                raise exception.NotFound(name)
            self.props[name].update((k, str(v)) for k, v in props.items())

    def inherit(self, name, prop):
        with self.lock:
            self.props[name].pop(prop, None)

    def next_sync(self, volume_id):
        value = self.props['vault/volume-' + volume_id].get(NS + 'next-sync')
        return None if value is None else int(value)


class Clock(object):

    def __init__(self, now=1000.0):
        self.now = now

    def __call__(self):
        return self.now


class FakeRun(object):
    """A sync that records order and concurrency.

    A volume with a gate waits for it (a slow volume); others take a few
    milliseconds. ``fail[volume]`` is raised once.
    """

    def __init__(self, clock=None, advance=0):
        self.lock = threading.Lock()
        self.active = 0
        self.max_active = 0
        self.order = []
        self.done = []
        self.gates = {}
        self.fail = {}
        self.clock = clock
        self.advance = advance
        self._started = collections.defaultdict(threading.Event)

    def started(self, volume_id):
        with self.lock:
            return self._started[volume_id]

    def __call__(self, volume_id):
        with self.lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            self.order.append(volume_id)
            self._started[volume_id].set()
        try:
            gate = self.gates.get(volume_id)
            if gate is not None:
                if not gate.wait(WAIT):
                    raise AssertionError('gate never opened')
            else:
                time.sleep(0.02)
            if self.clock and self.advance:
                self.clock.now += self.advance
            error = self.fail.pop(volume_id, None)
            if error:
                raise error
            return 'synced ' + volume_id
        finally:
            with self.lock:
                self.active -= 1
                self.done.append(volume_id)


class DueTest(testtools.TestCase):

    def test_due_oldest_first_none_is_now(self):
        # E was set to nosync while its replica is out: it still syncs
        # (the mode applies at its next attach).
        volumes = [(A, volume(next_sync=1500)),
                   (B, volume(next_sync=900)),
                   (C, volume(next_sync=None)),
                   (D, volume(next_sync=1000)),
                   (E, volume(next_sync=100, mode='nosync')),
                   (F, volume(next_sync=200))]
        self.assertEqual([E, F, B, C, D], scheduler.due(volumes, 1000))
        self.assertEqual([], scheduler.due([], 1000))


class FairSlotsTest(testtools.TestCase):

    def test_waiters_served_in_order(self):
        slots = scheduler.FairSlots(1)
        self.assertTrue(slots.acquire(WAIT))
        served = []
        threads = []
        for n in range(5):
            ready = threading.Event()

            def wait(n=n, ready=ready):
                ready.set()
                with slots.slot(WAIT):
                    served.append(n)

            t = threading.Thread(target=wait)
            t.start()
            threads.append(t)
            ready.wait(WAIT)
            # in line before the next one starts
            deadline = time.monotonic() + WAIT
            while slots.waiting < n + 1 and time.monotonic() < deadline:
                time.sleep(0.001)
        slots.release()
        for t in threads:
            t.join(WAIT)
        self.assertEqual([0, 1, 2, 3, 4], served)
        self.assertEqual(0, slots.busy)

    def test_timeout_and_limit_changes(self):
        slots = scheduler.FairSlots(1)
        self.assertTrue(slots.acquire(WAIT))
        self.assertFalse(slots.acquire(0.05))
        self.assertEqual(0, slots.waiting)  # gave up, left the line
        self.assertRaises(scheduler.NoSlot, slots.slot(0.01).__enter__)
        granted = []
        slots.enqueue(lambda: granted.append('x'))
        self.assertEqual([], granted)
        slots.set_limit(2)  # a raised limit serves the line
        self.assertEqual(['x'], granted)
        slots.set_limit(1)  # lowered: holders keep theirs, nobody new
        slots.enqueue(lambda: granted.append('y'))
        slots.release()
        self.assertEqual(['x'], granted)
        slots.release()
        self.assertEqual(['x', 'y'], granted)
        slots.release()
        self.assertRaises(RuntimeError, slots.release)


class SchedulerTest(testtools.TestCase):

    def setUp(self):
        super(SchedulerTest, self).setUp()
        self.zfs = MemoryZFS()
        self.attrs = attributes.Attributes(self.zfs, 'vault')
        self.clock = Clock()
        self.run = FakeRun(self.clock)

    def scheduler(self, **kwargs):
        sched = scheduler.SyncScheduler(self.attrs, self.run,
                                        clock=self.clock, **kwargs)
        self.addCleanup(sched.close, WAIT)
        return sched

    def drained(self, sched):
        self.assertTrue(sched.drain(WAIT), 'work did not finish')

    def at_most(self, sched, limit):
        """Tick with every sync held: ``limit`` start, one more per end.

        In due order (FIFO). Gated, so that the syncs overlap however
        slow this machine is.
        """
        gates = {v: threading.Event() for v in ALL}
        self.run.gates = gates
        self.run.max_active = 0
        self.run.order = []
        self.assertEqual(list(ALL), sched.tick())
        for v in ALL[:limit]:
            self.assertTrue(self.run.started(v).wait(WAIT))
        for i, v in enumerate(ALL):
            time.sleep(0.05)  # room for a sync over the limit to start
            self.assertEqual(limit, self.run.max_active)
            gates[v].set()
            if limit + i < len(ALL):
                self.assertTrue(self.run.started(ALL[limit + i]).wait(WAIT))
        self.drained(sched)
        self.assertEqual(limit, self.run.max_active)
        self.assertEqual(list(ALL), self.run.order)  # due order, FIFO
        for v in ALL:
            self.run.started(v).clear()

    def test_limit_from_vault_never_exceeded_and_reread(self):
        self.attrs.set_vault(sync_workers=2)
        sched = self.scheduler()
        for v in ALL:
            sched.add(v)
        self.at_most(sched, 2)
        # The vault's limit is read again at every tick.
        self.attrs.set_vault(sync_workers=3)
        self.clock.now += 300
        self.at_most(sched, 3)
        self.assertEqual(3, sched.status()['workers'])

    def test_fixed_workers_ignore_vault(self):
        self.attrs.set_vault(sync_workers=4)
        sched = self.scheduler(workers=1)
        for v in ALL:
            sched.add(v)
        sched.tick()
        self.drained(sched)
        self.assertEqual(1, self.run.max_active)
        self.assertRaises(exception.InvalidInput, scheduler.SyncScheduler,
                          self.attrs, self.run, workers=0)

    def test_first_requested_runs_first(self):
        sched = self.scheduler(workers=1)
        self.run.gates[C] = threading.Event()
        for v in (C, A, B):
            self.assertTrue(sched.request(v))
        self.assertTrue(self.run.started(C).wait(WAIT))
        self.assertEqual({'queued': [A, B], 'running': [C]},
                         {k: sched.status()[k]
                          for k in ('queued', 'running')})
        self.run.gates[C].set()
        self.drained(sched)
        self.assertEqual([C, A, B], self.run.order)

    def test_slow_volume_does_not_starve_others(self):
        sched = self.scheduler(workers=2)
        self.run.gates[A] = threading.Event()
        for v in (A, B, C, D):
            sched.request(v)
        self.assertTrue(self.run.started(A).wait(WAIT))
        for v in (B, C, D):
            self.assertTrue(self.run.started(v).wait(WAIT))
        deadline = time.monotonic() + WAIT
        while len(self.run.done) < 3 and time.monotonic() < deadline:
            time.sleep(0.005)
        self.assertEqual([B, C, D], self.run.done)  # all past the slow one
        self.run.gates[A].set()
        self.drained(sched)
        self.assertEqual([B, C, D, A], self.run.done)
        self.assertEqual(2, self.run.max_active)

    def test_no_duplicates_and_requeue_behind_others(self):
        sched = self.scheduler(workers=1)
        self.run.gates[A] = threading.Event()
        for v in (A, B, C):
            sched.add(v)
        sched.tick()
        self.assertTrue(self.run.started(A).wait(WAIT))
        # Queued or running volumes are not queued twice, by tick or
        # request...
        self.assertEqual([], sched.tick())
        self.assertFalse(sched.request(B))
        # ...but "sync now" on the running one runs it again, after the
        # others: its snapshot may predate the request.
        self.assertTrue(sched.request(A))
        self.assertFalse(sched.request(A))
        self.assertEqual([B, C], sched.status()['queued'])
        self.run.gates.pop(A).set()  # the second run is not held
        self.drained(sched)
        self.assertEqual([A, B, C, A], self.run.order)

    def test_next_sync_written_after_finish(self):
        self.attrs.set_vault(frequency=600)
        self.attrs.set_volume('vault/volume-' + B, frequency='1h')
        self.run.advance = 50  # each sync takes 50 s of the fake clock
        sched = self.scheduler(workers=1)
        sched.add(A)
        sched.add(B)
        self.assertEqual([A, B], sched.tick())
        self.drained(sched)
        self.assertEqual(1050 + 600, self.zfs.next_sync(A))
        self.assertEqual(1100 + 3600, self.zfs.next_sync(B))
        self.assertEqual('synced ' + A, sched.last(A).result)
        self.assertEqual((1000, 1050), sched.last(A)[:2])
        # Not due before its time, due after; B later still.
        self.clock.now = 1649
        self.assertEqual([], sched.tick())
        self.clock.now = 1650
        self.assertEqual([A], sched.tick())
        self.drained(sched)
        self.assertEqual([A, B, A], self.run.order)

    def test_schedule_edited_on_vault_is_followed(self):
        sched = self.scheduler(workers=1)
        sched.add(A)
        sched.tick()
        self.drained(sched)
        self.assertEqual([], sched.tick())
        # An operator (the CLI, another process) moves next_sync to now.
        self.attrs.set_volume('vault/volume-' + A, next_sync=1000)
        self.assertEqual([A], sched.tick())
        self.drained(sched)
        # Set to nosync while its replica is out: still synced (issue 8,
        # defect 5: its syncs stopped silently). The mode is for the next
        # attach.
        self.attrs.set_volume('vault/volume-' + A, next_sync=0,
                              sync_mode='nosync')
        self.assertEqual([A], sched.tick())
        self.drained(sched)

    def test_failure_backs_off_and_blocks_nobody(self):
        sched = self.scheduler(workers=1)
        self.run.fail[A] = exception.CommandFailed('vault unreachable')
        sched.add(A)
        sched.add(B)
        self.assertEqual([A, B], sched.tick())
        self.drained(sched)
        self.assertEqual([A, B], self.run.done)
        self.assertIsNone(self.zfs.next_sync(A))  # schedule untouched
        self.assertIsInstance(sched.last(A).error, exception.CommandFailed)
        self.assertEqual(1300, self.zfs.next_sync(B))
        self.assertEqual({A: 1060}, sched.status()['retry'])
        self.clock.now = 1059
        self.assertEqual([], sched.tick())
        self.clock.now = 1060
        self.assertEqual([A], sched.tick())
        self.drained(sched)
        self.assertEqual(1360, self.zfs.next_sync(A))
        self.assertEqual({}, sched.status()['retry'])

    def test_request_skips_backoff(self):
        sched = self.scheduler(workers=1)
        self.run.fail[A] = exception.CommandFailed('cut')
        sched.request(A)
        self.drained(sched)
        self.assertTrue(sched.request(A))
        self.drained(sched)
        self.assertEqual([A, A], self.run.order)
        self.assertEqual(1300, self.zfs.next_sync(A))

    def test_unsaved_next_sync_kept_in_memory(self):
        sched = self.scheduler(workers=1)
        sched.add(A)
        self.zfs.fail_set = exception.CommandFailed('ssh: timeout')
        sched.tick()
        self.drained(sched)
        self.zfs.fail_set = None
        self.assertIsNone(self.zfs.next_sync(A))
        self.assertEqual([], sched.tick())  # not again at once
        self.clock.now = 1300
        self.assertEqual([A], sched.tick())

    def test_fenced_volume_dropped(self):
        sched = self.scheduler(workers=1)
        self.run.fail[A] = leaselib.Fenced('lease broken')
        sched.add(A)
        sched.add(B)
        sched.tick()
        self.drained(sched)
        self.assertEqual([B], sched.status()['watched'])
        self.clock.now += 3600
        self.assertEqual([B], sched.tick())
        # The agent's watch adds its still local replica every tick: it
        # stays out (each sync would be refused and logged again).
        sched.add(A)
        self.assertEqual([B], sched.status()['watched'])
        # Gone from here (discarded), then attached again: watched.
        sched.remove(A)
        sched.add(A)
        self.assertEqual([B, A], sched.status()['watched'])

    def test_seeds_share_the_line(self):
        sched = self.scheduler(workers=1)
        seed_ran = []
        with sched.slots(WAIT):
            self.assertTrue(sched.request(A))  # waits behind the seed
            self.assertEqual([A], sched.status()['queued'])
            self.assertFalse(self.run.started(A).wait(0.1))

            def second_seed():
                with sched.slots(WAIT):
                    seed_ran.append(list(self.run.done))

            t = threading.Thread(target=second_seed)
            t.start()
            self.assertRaises(scheduler.NoSlot,
                              sched.slots(0.05).__enter__)
        t.join(WAIT)
        self.drained(sched)
        self.assertEqual([[A]], seed_ran)  # A was in line first
        self.assertEqual(1, self.run.max_active)

    def test_slots_read_vault_limit_before_first_tick(self):
        self.attrs.set_vault(sync_workers=3)
        sched = self.scheduler()
        with sched.slots(WAIT), sched.slots(WAIT), sched.slots(WAIT):
            self.assertEqual(3, sched.status()['busy'])

    def test_unreadable_vault_skips_tick(self):
        sched = self.scheduler(workers=1)
        sched.add(A)
        self.zfs.fail_get = exception.CommandFailed('ssh: no route')
        self.assertEqual([], sched.tick())
        self.zfs.fail_get = None
        self.assertEqual([A], sched.tick())

    def test_drain_times_out_and_close_drops_queue(self):
        sched = self.scheduler(workers=1)
        self.run.gates[A] = threading.Event()
        sched.request(A)
        sched.request(B)
        self.assertTrue(self.run.started(A).wait(WAIT))
        start = time.monotonic()
        self.assertFalse(sched.drain(0.1))
        self.assertLess(time.monotonic() - start, 2)
        sched.remove(B)
        self.assertEqual([], sched.status()['queued'])
        sched.request(C)
        self.assertFalse(sched.close(0.05))  # A still running
        self.assertFalse(sched.request(D))
        self.run.gates[A].set()
        self.assertTrue(sched.close(WAIT))
        self.assertEqual([A], self.run.order)

    def test_bad_ids_refused(self):
        sched = self.scheduler(workers=1)
        for bad in ('../x', '', 'a b'):
            self.assertRaises(exception.InvalidInput, sched.request, bad)
            self.assertRaises(exception.InvalidInput, sched.add, bad)
        self.assertEqual([], self.run.order)
