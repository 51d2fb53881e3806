"""The compute host's replica agent: recover at start, then sync on schedule.

At start it resumes the flows a crash left in the logbook and reconciles
what exists with them (flows.Orchestrator.recover); then, every ``tick``
seconds, it watches the disks whose replica is on this host (a disk in
state 'local' is synced, one that went away is dropped) and lets the sync
scheduler (scheduler.py) run the due sync points through the orchestrator,
at most ``sync_workers`` at a time; and it picks up what was left undone
(:meth:`Agent.pick_up`). ``zfs-vault-agent`` runs it
(cinder_zfs_vault/cmd/agent.py).
"""

import json
import os
import threading
import time

from oslo_log import log as logging

from cinder_zfs_vault.compute_host import scheduler as schedlib
from cinder_zfs_vault import lease as leaselib
from cinder_zfs_vault import locking
from cinder_zfs_vault import status

LOG = logging.getLogger(__name__)

#: Seconds a disk stays on its origin with no flow before the agent seeds
#: it: a CLI ``attach`` goes on to its own seed within this.
PICK_UP_AFTER = 30
#: Seconds before a failed pick-up is tried again, doubled at each failure
#: in a row, at most RETRY_MAX.
RETRY_FIRST = 30
RETRY_MAX = 1800


class Agent(object):
    """Recovery and the sync schedule of one host's replicas.

    :param orchestrator: :class:`~.flows.Orchestrator`.
    :param scheduler: a :class:`~.scheduler.SyncScheduler`
        (default: one over the vault's attributes running the
        orchestrator's sync).
    :param tick: seconds between two looks at the schedule.
    :param problems: path of the file where :attr:`failed` is kept for
        ``zfs-vault list`` (:func:`read_problems`); None keeps it here.
    """

    def __init__(self, orchestrator, scheduler=None, tick=10.0,
                 clock=time.monotonic, problems=None):
        self.orchestrator = orchestrator
        self.replica = orchestrator.replica
        self.scheduler = scheduler or schedlib.SyncScheduler(
            self.replica.attributes, run=orchestrator.sync)
        self.tick = tick
        self._clock = clock
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        #: volume id -> thread of a pick-up running.
        self._picking = {}
        #: volume id -> when it was first seen left undone.
        self._idle_since = {}
        #: volume id -> (failures in a row, not before, last error).
        self.failed = {}
        self._problems = problems
        self._recovered = False

    def start(self):
        """Resume and reconcile; watch the replicas found.

        :returns: both reports of
            :meth:`~cinder_zfs_vault.compute_host.flows.Orchestrator.recover`.
        """
        report = self.orchestrator.recover()
        for line in report[0] + report[1]:
            LOG.info('recovery: %s', line)
        self._recovered = True
        self.watch()
        return report

    def states(self):
        """``{volume id: State}`` of the disks with a trace on this host."""
        return {vid: self.replica.state(vid) for vid in self.replica.found()}

    def watch(self, states=None):
        """Sync the disks that are local here; forget those that left.

        :param states: :meth:`states`, if the caller has it.
        :returns: the volume ids watched now.
        """
        states = self.states() if states is None else states
        local = [vid for vid in sorted(states)
                 if states[vid] == status.State.LOCAL]
        for vid in set(self.scheduler.status().get('watched', ())) - \
                set(local):
            self.scheduler.remove(vid)
        for vid in local:
            self.scheduler.add(vid)
        return local

    def pick_up(self, states=None):
        """Start what was left undone, each in a thread of its own.

        A flow in the logbook whose process is gone (a killed CLI: its
        lock is free) is resumed; a disk on its origin with no flow (a
        CLI ``attach --no-seed``, a seed flow that failed: a vault away, a
        merge longer than ``merge_timeout``) is seeded and cut over once
        it was so for :data:`PICK_UP_AFTER` seconds. A failure is logged
        and kept in :attr:`failed` (the next try backs off: RETRY_FIRST
        seconds doubled per failure, RETRY_MAX at most; never again after
        a fence, which needs an operator); never a crash.
        :param states: :meth:`states`, if the caller has it.
        :returns: volume ids started now.
        """
        states = self.states() if states is None else states
        now = self._clock()
        # A sync this agent's scheduler runs is in the logbook too: it is
        # not left undone (no thread to find its lock taken each tick).
        running = set(self.scheduler.status().get('running', ()))
        flows = {vid for _kind, vid, _state in self.orchestrator.in_flight()
                 if vid not in running}
        undone = flows | {vid for vid, state in states.items()
                          if state == status.State.SEEDING}
        started = []
        with self._lock:
            for vid in set(self._idle_since) - undone:
                del self._idle_since[vid]
            for vid in sorted(undone):
                since = self._idle_since.setdefault(vid, now)
                if vid in self._picking or \
                        now < self.failed.get(vid, (0, 0, None))[1] or \
                        (vid not in flows and now - since < PICK_UP_AFTER):
                    continue
                self._start(vid, vid in flows)
                started.append(vid)
        return started

    def seed_soon(self, volume_id):
        """Seed and cut over a disk attached now (the driver's attach).

        In a thread of its own, as :meth:`pick_up` would after
        :data:`PICK_UP_AFTER` seconds; a failure is kept and retried as
        there. :returns: False if one runs already.
        """
        with self._lock:
            if volume_id in self._picking:
                return False
            self.failed.pop(volume_id, None)
            self._start(volume_id, False)
            return True

    def forget(self, volume_id):
        """A disk returned to the vault: no more syncs, no problems."""
        self.scheduler.remove(volume_id)
        with self._lock:
            self.failed.pop(volume_id, None)
            self._idle_since.pop(volume_id, None)
            self._save_problems()

    def _start(self, vid, orphan):
        """A pick-up thread; the caller holds ``_lock``."""
        thread = threading.Thread(target=self._pick_up, args=(vid, orphan),
                                  name='pick-up-' + vid, daemon=True)
        self._picking[vid] = thread
        thread.start()

    def _pick_up(self, vid, orphan):
        try:
            if orphan:
                self.orchestrator.resume_orphan(vid)
            else:
                self.orchestrator.seed(vid)
        except locking.LockTimeout:
            pass  # its flow runs in another process: not left undone
        except Exception as e:
            with self._lock:
                failures = self.failed.get(vid, (0, 0, None))[0] + 1
                # Fenced: only an operator can settle it (zfs-vault
                # discard or allow); trying again would change nothing.
                delay = (float('inf') if isinstance(e, leaselib.Fenced)
                         else min(RETRY_FIRST * 2 ** (failures - 1),
                                  RETRY_MAX))
                self.failed[vid] = (failures, self._clock() + delay, str(e))
            LOG.error('Volume %s: %s failed (%d in a row), tried again in '
                      '%ss: %s', vid, 'resuming its flow' if orphan
                      else 'seeding it', failures, delay, e)
        else:
            with self._lock:
                self.failed.pop(vid, None)
        finally:
            with self._lock:
                self._picking.pop(vid, None)
                self._save_problems()

    def _save_problems(self):
        """Write :attr:`failed` for the CLI: epoch times, atomically."""
        if not self._problems:
            return
        offset = time.time() - self._clock()
        problems = {vid: {'failures': n, 'error': error,
                          'retry_at': None if not_before == float('inf')
                          else int(not_before + offset)}
                    for vid, (n, not_before, error) in self.failed.items()}
        try:
            tmp = self._problems + '.tmp'
            with open(tmp, 'w') as f:
                json.dump(problems, f, sort_keys=True)
            os.replace(tmp, self._problems)
        except OSError as e:
            LOG.warning('problems not saved to %s: %s', self._problems, e)

    def run(self, close_timeout=600):
        """Start, then tick until :meth:`stop`.

        Running syncs and pick-ups get ``close_timeout`` seconds to finish
        (one cut short resumes from the logbook at the next start).
        """
        try:
            while not self._stopped.is_set():
                try:
                    if not self._recovered:
                        # Until it succeeds (a pool not imported yet, the
                        # vault away): a failing start is no crash loop.
                        self.start()
                    states = self.states()
                    self.watch(states)
                    self.scheduler.tick()
                    self.pick_up(states)
                except Exception:
                    # One bad look must not stop the schedule.
                    LOG.exception('agent tick failed')
                self._stopped.wait(self.tick)
        finally:
            deadline = self._clock() + close_timeout
            self.scheduler.close(close_timeout)
            with self._lock:
                picking = list(self._picking.values())
            for thread in picking:
                thread.join(max(0, deadline - self._clock()))

    def stop(self):
        self._stopped.set()


def read_problems(path):
    """What the running agent failed to do, as it keeps it.

    :returns: ``{volume id: {'failures', 'retry_at' (epoch seconds),
        'error'}}`` (:meth:`Agent._save_problems`); {} if none.
    """
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}
