"""The sync scheduler: which volume syncs back when, and how many at once.

Each volume carries its schedule on the vault zvol (:mod:`attributes`:
``frequency``, ``next_sync``); the vault carries ``sync_workers``, the
number of transfers that may run at once (img-storage's
``img_sync_workers``), so a booting cluster does not swamp the vault
(DESIGN.md, "Seed" and "Sync back").

* :meth:`SyncScheduler.tick` reads every attribute in one ``zfs get``,
  queues the watched volumes that are due, oldest ``next_sync`` first, and
  starts work up to the limit;
* :meth:`SyncScheduler.request` queues one volume now ("sync now");
* the queue is fair: first come, first served, one entry per volume (a
  volume queued or running is not queued again), shared in one line with
  other transfers (seeds) that take a slot through
  :meth:`SyncScheduler.slots`;
* after a sync, ``next_sync = finish + frequency`` is written to the zvol,
  so the schedule survives a restart: img-storage cleared its queue at
  start and lost in-flight syncs, we lose nothing because the pool says
  what is due;
* a failed sync is logged and retried after ``min(frequency, 60)`` seconds
  and never holds up other volumes; a fenced one (its lease was broken) is
  dropped, as its host may never sync it again.

Every wait has a timeout. Work runs in worker threads.
"""

import collections
import contextlib
import functools
import math
import threading
import time

from oslo_log import log as logging

from cinder_zfs_vault import attributes as attrlib
from cinder_zfs_vault import exception
from cinder_zfs_vault import lease as leaselib
from cinder_zfs_vault import validation

LOG = logging.getLogger(__name__)

#: Seconds before a failed sync is tried again, at most.
RETRY_AFTER = 60
#: Seconds a caller of :meth:`SyncScheduler.slots` waits by default.
SLOT_TIMEOUT = 3600

#: How a volume's last sync went: epoch seconds, run's return or the error.
Outcome = collections.namedtuple('Outcome', 'started finished result error')


class NoSlot(exception.ZFSVaultError):
    """No transfer slot came free within the timeout."""


def due(volumes, now):
    """The volumes due for a sync at ``now``, oldest ``next_sync`` first.

    :param volumes: iterable of (volume_id, :data:`VolumeAttributes`) of
        the disks whose replica is on this host.
    :param now: epoch seconds.
    :returns: list of volume ids whose ``next_sync <= now``; an unset
        ``next_sync`` (None) is due now. Ties keep the given order.
        ``sync_mode`` does not matter: it says how the next attach maps
        the disk, and a replica that is out holds writes the vault lacks
        until its detach (a disk set to ``nosync`` while out stopped
        syncing, silently).
    """
    ready = [(now if a.next_sync is None else a.next_sync, vid)
             for vid, a in volumes
             if a.next_sync is None or a.next_sync <= now]
    return [vid for _, vid in sorted(ready, key=lambda item: item[0])]


class _Ticket(object):
    __slots__ = ('on_grant',)

    def __init__(self, on_grant):
        self.on_grant = on_grant


class FairSlots(object):
    """A counting limit that serves its waiters first come, first served.

    Like :class:`threading.BoundedSemaphore`, whose ``release`` wakes an
    arbitrary waiter, but in order, with a limit that can change, and with
    waiters that are callbacks as well as blocked threads (a queued sync
    needs no thread until its turn). A newcomer never overtakes the line.

    :param limit: slots (int >= 1).
    """

    def __init__(self, limit):
        self._lock = threading.Lock()
        self._limit = limit
        self._busy = 0
        self._line = collections.deque()

    @property
    def limit(self):
        return self._limit

    @property
    def busy(self):
        """Slots held now."""
        return self._busy

    @property
    def waiting(self):
        """Callers in line."""
        return len(self._line)

    def set_limit(self, limit):
        """Change the limit (int >= 1).

        Holders above a lowered limit keep their slot; nobody new is served
        until the count is under it.
        """
        with self._lock:
            self._limit = limit
            granted = self._grant()
        self._notify(granted)

    def enqueue(self, on_grant):
        """Join the line; ``on_grant()`` is called when the slot is ours.

        It is called in this thread if a slot is free, else in the thread
        that frees one; it must not block, and the holder must
        :meth:`release` later.
        :returns: a ticket for :meth:`cancel`.
        """
        ticket = _Ticket(on_grant)
        with self._lock:
            self._line.append(ticket)
            granted = self._grant()
        self._notify(granted)
        return ticket

    def cancel(self, ticket):
        """Leave the line. :returns: False if the slot was granted already."""
        with self._lock:
            try:
                self._line.remove(ticket)
            except ValueError:
                return False
            return True

    def acquire(self, timeout):
        """Wait in line for a slot, at most ``timeout`` seconds.

        :returns: True when the slot is held (release it), False on timeout.
        """
        event = threading.Event()
        ticket = self.enqueue(event.set)
        if event.wait(timeout):
            return True
        # Granted between the timeout and the cancel: we hold it after all.
        return not self.cancel(ticket)

    def release(self):
        """Give a slot back; the next in line gets it."""
        with self._lock:
            if self._busy <= 0:
                raise RuntimeError('slot released more often than taken')
            self._busy -= 1
            granted = self._grant()
        self._notify(granted)

    @contextlib.contextmanager
    def slot(self, timeout=SLOT_TIMEOUT):
        """Hold a slot for the ``with`` block. :raises NoSlot: timeout."""
        if not self.acquire(timeout):
            raise NoSlot('no transfer slot free within %ss (%d of %d busy, '
                         '%d waiting)' % (timeout, self._busy, self._limit,
                                          len(self._line)))
        try:
            yield
        finally:
            self.release()

    def _grant(self):
        """Hand free slots to the head of the line (lock held)."""
        granted = []
        while self._line and self._busy < self._limit:
            self._busy += 1
            granted.append(self._line.popleft())
        return granted

    def _notify(self, granted):
        # Outside the lock: a callback may take other locks or enqueue.
        for ticket in granted:
            try:
                ticket.on_grant()
            except Exception:
                LOG.exception('Transfer slot callback failed; slot freed.')
                self.release()


class SyncScheduler(object):
    """Runs sync points on schedule or on request, fairly, within a limit.

    :param attributes: :class:`~cinder_zfs_vault.attributes.Attributes` of
        the vault (schedule read and written there).
    :param run: callable(volume_id) doing one sync (the replica engine's
        ``sync``); what it returns is kept in :meth:`last`.
    :param clock: epoch seconds now (``next_sync`` is epoch seconds).
    :param workers: fixed transfer limit; None reads the vault's
        ``sync_workers`` at every tick.
    """

    def __init__(self, attributes, run, clock=time.time, workers=None):
        self.attributes = attributes
        self._run = run
        self._clock = clock
        self._workers = (None if workers is None else
                         attrlib.parse_sync_workers(workers, 'workers'))
        self._limit_read = workers is not None
        self._slots = FairSlots(self._workers or
                                attrlib.VAULT_DEFAULTS.sync_workers)
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._watched = {}     # volume id -> None, in the order added
        self._queued = {}      # volume id -> ticket, first come first
        self._running = set()
        self._again = set()    # requested while running: queue after
        # Fenced here (the vault broke this host's lease): never synced
        # again from here, whoever adds them, until they leave (remove).
        self._fenced = set()
        self._not_before = {}  # volume id -> epoch: retry or unsaved next
        self._frequency = {}   # volume id -> seconds, as last read
        self._last = {}        # volume id -> Outcome
        self._closed = False

    # -- which volumes ------------------------------------------------------

    def add(self, volume_id):
        """Watch a volume (it has a local replica here): sync on schedule.

        Not one fenced here: its replica is still local, so the agent's
        every tick adds it again, and each sync would be refused again.
        """
        vid = validation.volume_id(volume_id)
        with self._lock:
            if vid not in self._fenced:
                self._watched[vid] = None

    def remove(self, volume_id):
        """Stop watching a volume (detached); a queued sync is dropped.

        A running sync finishes.
        """
        vid = validation.volume_id(volume_id)
        with self._lock:
            self._watched.pop(vid, None)
            self._fenced.discard(vid)
            self._again.discard(vid)
            self._not_before.pop(vid, None)
            ticket = self._queued.get(vid)
            if ticket is not None and self._slots.cancel(ticket):
                del self._queued[vid]
                self._changed.notify_all()

    # -- starting work ------------------------------------------------------

    def tick(self):
        """Queue the watched volumes that are due and start work.

        One ``zfs get`` reads the vault's ``sync_workers`` and every
        volume's schedule. A vault that cannot be read is logged and the
        tick skipped (queued work goes on).
        :returns: volume ids queued by this tick, in queue order.
        """
        if self._closed:
            return []
        now = self._clock()
        try:
            vault, volumes = self.attributes.read_all()
        except Exception as e:
            LOG.warning('Sync schedule not read from %s: %s',
                        self.attributes.vault_root, e)
            return []
        self._set_limit(vault.sync_workers)
        with self._lock:
            candidates = []
            for vid in self._watched:
                if vid in self._queued or vid in self._running:
                    continue
                attrs = volumes.get(self.attributes.dataset(vid))
                if attrs is None:
                    LOG.warning('Volume %s: no zvol in the vault %s; not '
                                'synced.', vid, self.attributes.vault_root)
                    continue
                self._frequency[vid] = attrs.frequency
                candidates.append((vid, self._held_back(vid, attrs)))
            ready = due(candidates, now)
            for vid in ready:
                self._enqueue(vid)
        return ready

    def _held_back(self, vid, attrs):
        """The schedule, moved later by a retry backoff or an unsaved next."""
        later = self._not_before.get(vid)
        if later is not None and (attrs.next_sync is None or
                                  attrs.next_sync < later):
            return attrs._replace(next_sync=later)
        return attrs

    def request(self, volume_id):
        """Sync ``volume_id`` now: queue it (the CLI's "sync now").

        It skips the schedule and any retry backoff; it takes its turn in
        the line. A volume already queued is not queued twice; a running
        one is queued again once it finishes (its snapshot may predate the
        request).
        :returns: True if queued (or to be), False if it already was.
        :raises InvalidInput: not a volume id.
        """
        vid = validation.volume_id(volume_id)
        if self._closed:
            return False
        self._read_limit_once()
        with self._lock:
            if vid in self._queued or vid in self._again:
                return False
            if vid in self._running:
                self._again.add(vid)
                return True
            self._not_before.pop(vid, None)
            self._enqueue(vid)
            return True

    def slots(self, timeout=SLOT_TIMEOUT):
        """A context manager holding one transfer slot (for a seed).

        Seeds and syncs share the ``sync_workers`` limit and one
        first-come line in this process.
        :raises NoSlot: none free within ``timeout`` seconds.
        """
        self._read_limit_once()
        return self._slots.slot(timeout)

    def _read_limit_once(self):
        """Before the first tick, read the vault's limit (else default)."""
        if self._limit_read:
            return
        try:
            self._set_limit(self.attributes.vault().sync_workers)
        except Exception as e:
            LOG.warning('sync_workers not read from %s (%s); using %d.',
                        self.attributes.vault_root, e, self._slots.limit)

    def _set_limit(self, workers):
        self._limit_read = True
        if self._workers is None and workers != self._slots.limit:
            LOG.info('Transfers at once: %d.', workers)
            self._slots.set_limit(workers)

    def _enqueue(self, vid):
        """Put ``vid`` in the line (lock held)."""
        self._queued[vid] = None
        ticket = self._slots.enqueue(functools.partial(self._start, vid))
        if vid in self._queued:  # else it was granted at once
            self._queued[vid] = ticket

    def _start(self, vid):
        """Its turn: run it in a worker thread (slot held)."""
        with self._lock:
            self._queued.pop(vid, None)
            self._running.add(vid)
        thread = threading.Thread(target=self._work, args=(vid,),
                                  name='zfsvault-sync-' + vid[:8],
                                  daemon=True)
        try:
            thread.start()
        except Exception:
            with self._lock:
                self._running.discard(vid)
                self._changed.notify_all()
            raise  # FairSlots frees the slot

    # -- doing work ---------------------------------------------------------

    def _work(self, vid):
        started = self._clock()
        result = error = None
        try:
            result = self._run(vid)
        except Exception as e:
            error = e
        finished = self._clock()
        try:
            if error is None or isinstance(error, exception.Preempted):
                # Preempted: a detach or a caller's sync point has the
                # disk; no retry backoff, the schedule goes on from now.
                self._schedule_next(vid, finished)
            else:
                self._failed(vid, error, finished)
        except Exception:
            LOG.exception('Volume %s: scheduling after its sync failed.',
                          vid)
        finally:
            with self._lock:
                self._last[vid] = Outcome(started, finished, result, error)
                self._running.discard(vid)
                if vid in self._again and not self._closed:
                    self._again.discard(vid)
                    self._not_before.pop(vid, None)
                    # Joins the line behind the others before our slot
                    # goes to the head: a busy volume cannot hog it.
                    self._enqueue(vid)
                self._changed.notify_all()
            self._slots.release()

    def _frequency_of(self, vid, dataset):
        try:
            frequency = self.attributes.volume(dataset).frequency
        except Exception as e:
            frequency = self._frequency.get(
                vid, attrlib.VAULT_DEFAULTS.frequency)
            LOG.warning('Volume %s: frequency not read (%s); using %ds.',
                        vid, e, frequency)
        self._frequency[vid] = frequency
        return frequency

    def _schedule_next(self, vid, finished):
        """Write ``next_sync = finished + frequency`` to the vault zvol.

        If the vault cannot take it, the time is kept here so the volume
        is not synced again at once.
        """
        dataset = self.attributes.dataset(vid)
        next_sync = int(math.ceil(finished + self._frequency_of(vid,
                                                                dataset)))
        try:
            self.attributes.set_volume(dataset, next_sync=next_sync)
        except Exception as e:
            LOG.warning('Volume %s: next_sync %d not saved: %s', vid,
                        next_sync, e)
            with self._lock:
                self._not_before[vid] = next_sync
            return
        with self._lock:
            self._not_before.pop(vid, None)
        LOG.debug('Volume %s synced; next at %d.', vid, next_sync)

    def _failed(self, vid, error, finished):
        if isinstance(error, leaselib.Fenced):
            LOG.error('Volume %s: fenced, no longer synced from here: %s',
                      vid, error)
            with self._lock:
                self._watched.pop(vid, None)
                self._fenced.add(vid)
                self._again.discard(vid)
            return
        delay = min(self._frequency.get(vid,
                                        attrlib.VAULT_DEFAULTS.frequency),
                    RETRY_AFTER)
        with self._lock:
            self._not_before[vid] = finished + delay
        LOG.error('Volume %s: sync failed, retry in %ds: %s', vid, delay,
                  error, exc_info=error)

    # -- waiting and looking ------------------------------------------------

    def drain(self, timeout):
        """Wait until nothing is queued or running.

        :param timeout: seconds. :returns: True if idle, False on timeout.
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._queued or self._running:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
            return True

    def close(self, timeout):
        """Stop: drop the queue, wait for running syncs.

        Nothing is lost: what was queued is still due on the vault and the
        next scheduler picks it up.
        :returns: True if no sync is still running.
        """
        with self._lock:
            self._closed = True
            self._again.clear()
            for vid, ticket in list(self._queued.items()):
                if ticket is not None and self._slots.cancel(ticket):
                    del self._queued[vid]
            self._changed.notify_all()
        return self.drain(timeout)

    def last(self, volume_id):
        """The :data:`Outcome` of the volume's last sync here, or None."""
        with self._lock:
            return self._last.get(validation.volume_id(volume_id))

    def status(self):
        """What is going on, for an operator.

        :returns: dict: ``watched``, ``queued`` (in line order) and
            ``running`` volume ids; ``retry`` {volume id: epoch seconds};
            ``workers`` (the limit) and ``busy`` (slots held, seeds too).
        """
        with self._lock:
            return {'watched': list(self._watched),
                    'queued': list(self._queued),
                    'running': sorted(self._running),
                    'retry': dict(self._not_before),
                    'workers': self._slots.limit,
                    'busy': self._slots.busy}
