"""Crash-safe orchestration of the replica engine with TaskFlow.

Each operation on a disk (attach, seed with cut-over, sync, detach) is a
TaskFlow linear flow of small idempotent tasks over
:class:`~cinder_zfs_vault.compute_host.replica.ReplicaEngine` steps, run by an
in-process engine whose logbook is a SQLite file (TaskFlow's SQLAlchemy
persistence backend). A flow's detail is saved before its first task runs
and deleted when it ends, so the logbook holds exactly the work in flight
(DESIGN.md: "databases only hold work in flight"; the pool holds the truth).

When the process is killed, the next :meth:`Orchestrator.resume` finds the
unfinished flows, rebuilds them from their factories (TaskFlow
"resumption": ``load_from_detail``) and runs them on from the task that was
running, which is safe because every task is idempotent. :meth:`reconcile`
then compares what the logbook says with what really exists (ZFS, LIO,
iSCSI sessions, device-mapper) and finishes or cleans up what no flow
covers, never destroying a zvol: only devices, sessions and exports that
hold no data go.

The ReplicaEngine and the progress callback are injected transient (not
persisted): a logbook row holds only names and numbers.
"""

import contextlib
import functools

from oslo_log import log as logging
import sqlalchemy
from sqlalchemy import pool
import taskflow.engines
from taskflow.patterns import linear_flow
from taskflow.persistence import backends
from taskflow.persistence.backends import impl_sqlalchemy
from taskflow.persistence import models
from taskflow import states
from taskflow import task
from taskflow.utils import persistence_utils as p_utils

from cinder_zfs_vault.compute_host.phases import sync as sync_phase
from cinder_zfs_vault import locking
from cinder_zfs_vault import validation

LOG = logging.getLogger(__name__)

_DONE = (states.SUCCESS, states.REVERTED, states.FAILURE)

#: Seconds a logbook write waits for the one writer before it fails: for
#: the process's connection (other threads' flows), then for SQLite's
#: lock (another process: the CLI beside the agent).
LOGBOOK_WAIT = 60


def persistence(logbook_url):
    """The TaskFlow persistence backend of the logbook at ``logbook_url``.

    SQLite takes one writer at a time. TaskFlow opens a connection per
    call for it (``NullPool``), so the agent's threads (its RPC server
    runs many calls at once: a mass attach) and a second process met
    "database is locked" after SQLite's 5 s wait, and failed flows were
    left in the logbook (issue 21, 11). Here a process writes through one
    connection, which its threads wait for in turn (``QueuePool`` of
    one), SQLite waits :data:`LOGBOOK_WAIT` seconds for another process's
    write, and the journal is a write-ahead log (readers do not block the
    writer). Another database (MySQL) gets TaskFlow's own engine.
    """
    url = sqlalchemy.engine.url.make_url(logbook_url)
    if 'sqlite' not in url.drivername or \
            logbook_url.lower() in impl_sqlalchemy.SQLITE_IN_MEMORY:
        return backends.fetch({'connection': logbook_url})
    engine = sqlalchemy.create_engine(
        logbook_url, poolclass=pool.QueuePool, pool_size=1, max_overflow=0,
        pool_timeout=LOGBOOK_WAIT, pool_recycle=3600,
        connect_args={'timeout': LOGBOOK_WAIT, 'check_same_thread': False})
    sqlalchemy.event.listen(engine, 'connect', _write_ahead_log)
    return impl_sqlalchemy.SQLAlchemyBackend({'connection': logbook_url},
                                             engine=engine)


def _write_ahead_log(dbapi_connection, record):
    cursor = dbapi_connection.cursor()
    cursor.execute('PRAGMA journal_mode=WAL')
    cursor.close()


class _Step(task.Task):
    """A task over the injected ReplicaEngine (``replica``).

    TaskFlow binds execute()'s arguments by name from the flow's storage:
    ``replica``, ``progress`` and ``preempted`` (transient), ``volume_id``
    (the store), and what earlier tasks provide.
    """

    default_provides = None


class Attach(_Step):
    """Lease, origin, COW zvol, dm device (ReplicaEngine.attach).

    attach cleans up after itself when it fails, and a flow that ends
    with it has nothing after it to fail: no revert is needed.
    """

    default_provides = 'device'

    def execute(self, replica, volume_id, progress):
        return replica.attach(volume_id)


class Seed(_Step):
    """Full resumable send into the compute pool.

    No revert: a cut receive keeps its resume token for the next try.
    """

    def execute(self, replica, volume_id, progress):
        replica.seed(volume_id, progress=progress)


class CutOver(_Step):
    """Switch the live device onto the local replica; provides the pauses."""

    default_provides = 'pauses'

    def execute(self, replica, volume_id, progress):
        return replica.cutover(volume_id)


class Complete(_Step):
    """Seed unthrottled and cut over a disk still on its origin.

    Before a sync point a caller waits on (ReplicaEngine.complete); nothing
    for a disk that is local already. No revert: as Seed and CutOver.
    """

    def execute(self, replica, volume_id, progress):
        replica.complete(volume_id, progress=progress)


class Sync(_Step):
    """A sync point sent to the vault; provides its SyncResult as a dict."""

    default_provides = 'synced'

    def __init__(self, rate=None, **kwargs):
        super(Sync, self).__init__(**kwargs)
        self.rate = rate

    def execute(self, replica, volume_id, progress, preempted):
        return replica.sync(volume_id, rate=self.rate, progress=progress,
                            preempted=preempted)._asdict()


class Unmap(_Step):
    """Remove the VM's device; provides whether a replica is here."""

    default_provides = 'replica_here'

    def execute(self, replica, volume_id, progress):
        return replica.unmap(volume_id)

    def revert(self, replica, volume_id, progress, result=None, **kwargs):
        # A detach that fails after this leaves the disk attached, as it
        # was: the device over the (complete) local replica comes back.
        replica.remap(volume_id)


class FinalSync(Sync):
    """The last sync point, unthrottled (rate 0)."""

    def __init__(self, **kwargs):
        super(FinalSync, self).__init__(rate=0, **kwargs)

    def execute(self, replica, volume_id, progress, replica_here):
        if not replica_here:
            return None
        return super(FinalSync, self).execute(replica, volume_id, progress,
                                              None)


class Retire(_Step):
    """Destroy the replica once the vault confirmed it; release the lease."""

    def execute(self, replica, volume_id, progress, synced):
        replica.retire(volume_id, synced and synced['snapshot'])


# Flow factories: importable module functions, so TaskFlow can record them
# in the logbook and call them again to rebuild a flow on resumption.

def attach_flow(volume_id):
    return linear_flow.Flow('attach-' + volume_id).add(Attach())


def seed_flow(volume_id):
    return linear_flow.Flow('seed-' + volume_id).add(Seed(), CutOver())


def sync_flow(volume_id, rate=None, complete=False):
    flow = linear_flow.Flow('sync-' + volume_id)
    if complete:
        flow.add(Complete())
    return flow.add(Sync(rate=rate))


def detach_flow(volume_id):
    flow = linear_flow.Flow('detach-' + volume_id)
    return flow.add(Unmap(), FinalSync(), Retire())


FACTORIES = {'attach': attach_flow, 'seed': seed_flow, 'sync': sync_flow,
             'detach': detach_flow}


class Orchestrator(object):
    """Runs and resumes replica flows with a SQLite logbook.

    Every flow gets a logbook of its own (``<kind>-<volume id>``), deleted
    when the flow ends: what the database holds is the work in flight.

    :param replica: :class:`~.replica.ReplicaEngine`.
    :param logbook_url: SQLAlchemy URL of the logbook, e.g.
        ``sqlite:////var/lib/zfs-vault/logbook.sqlite``.
    :param lock_path: directory of the per-volume locks (one flow per
        volume at a time, across processes on this host).
    :param on_task: optional callable(task name, state) for every task
        transition (the CLI's status line; the kill tests' markers).
    :param lock_timeout: seconds a flow waits for one already running on
        the same volume before :class:`~cinder_zfs_vault.locking.LockTimeout`
        (a Busy error) is raised.
    """

    def __init__(self, replica, logbook_url, lock_path=None, on_task=None,
                 lock_timeout=600):
        self.replica = replica
        self.lock_timeout = lock_timeout
        self.backend = persistence(logbook_url)
        self.lock_path = lock_path
        self.on_task = on_task
        with self._connection() as conn:
            conn.upgrade()

    @contextlib.contextmanager
    def _connection(self):
        with contextlib.closing(self.backend.get_connection()) as conn:
            yield conn

    # -- public operations ---------------------------------------------------

    def attach(self, volume_id):
        """The VM's device path, at once (see ReplicaEngine.attach)."""
        return self._run('attach', volume_id)['device']

    def seed(self, volume_id, progress=None):
        """Seed the local replica and cut the device over to it.

        :param progress: callable(bytes_done, bytes_expected).
        :returns: the cut-over's I/O pauses in seconds (ReplicaEngine.cutover).
        """
        return self._run('seed', volume_id, progress=progress)['pauses']

    def sync(self, volume_id, progress=None, rate=None, complete=False):
        """A sync point now.

        :param rate: bytes/second, 0 unlimited, None the volume's limit.
        :param complete: a disk still seeding is seeded (unthrottled) and
            cut over first (a caller waits on the sync point); without it
            the sync of such a disk raises InvalidInput (no local replica).
        :returns: :data:`~.phases.sync.SyncResult`.
        """
        return sync_phase.SyncResult(**self._run(
            'sync', volume_id, progress=progress,
            options={'rate': rate, 'complete': complete})['synced'])

    def detach(self, volume_id, progress=None):
        """Return the disk to the vault (final sync, then retire).

        :returns: the final :data:`~.phases.sync.SyncResult`, or None if no
            replica was out.
        """
        synced = self._run('detach', volume_id, progress=progress)['synced']
        return sync_phase.SyncResult(**synced) if synced else None

    def in_flight(self):
        """[(kind, volume_id, state)] of the flows in the logbook."""
        return [(d.meta['kind'], d.meta['volume_id'], d.state)
                for _book, d in self._details()]

    # -- running and resuming -------------------------------------------------

    def _lock(self, volume_id, timeout=None):
        return locking.lock('zfsvault-flow-' + volume_id,
                            self.lock_timeout if timeout is None else timeout,
                            lock_path=self.lock_path)

    def _details(self):
        with self._connection() as conn:
            books = list(conn.get_logbooks())
        return [(book, detail) for book in books for detail in book]

    def _run(self, kind, volume_id, progress=None, options=None):
        validation.volume_id(volume_id)
        options = options or {}
        with self._lock(volume_id):
            book = models.LogBook('%s-%s' % (kind, volume_id))
            flow = FACTORIES[kind](volume_id, **options)
            detail = p_utils.create_flow_detail(
                flow, book=book, backend=self.backend,
                meta={'kind': kind, 'volume_id': volume_id,
                      'options': options})
            return self._finish(book, flow, detail, progress)

    def _finish(self, book, flow, detail, progress):
        volume_id = detail.meta['volume_id']
        engine = taskflow.engines.load(
            flow, flow_detail=detail, book=book, backend=self.backend,
            store={'volume_id': volume_id})
        # A periodic sync that holds the disk's lock while its stream waits
        # for a vault slot gives way to a caller waiting on the disk (the
        # agent's detach or snapshot RPC, seed.Urgency; issue 21, 10:
        # cinder-volume's detach call gave up after 600 s behind it).
        engine.storage.inject({
            'replica': self.replica, 'progress': progress,
            'preempted': functools.partial(self.replica.urgency.waited_on,
                                           volume_id),
        }, transient=True)
        if self.on_task:
            engine.atom_notifier.register(
                '*', lambda state, details: self.on_task(
                    details['task_name'].rsplit('.', 1)[-1], state))
        try:
            engine.run()
            return dict(engine.storage.fetch_all())
        finally:
            # Ended (done, or reverted after a failure): nothing in flight.
            if engine.storage.get_flow_state() in _DONE:
                with self._connection() as conn:
                    conn.destroy_logbook(book.uuid)

    def resume(self):
        """Run every unfinished flow in the logbook on to its end.

        Called when the process starts, before anything new runs. The flow
        is rebuilt by its factory and run from the task that was running
        (TaskFlow resumption); every task is idempotent. A flow that fails
        again is reverted like any failed flow (and leaves the logbook);
        its error is returned and logged, and the others still run.
        :returns: [(kind, volume_id, 'done' | error text)].
        """
        results = []
        for book, detail in self._details():
            kind, volume_id = detail.meta['kind'], detail.meta['volume_id']
            try:
                self._resume(book, detail)
                results.append((kind, volume_id, 'done'))
            except Exception as e:
                LOG.error('resuming %s of %s failed: %s', kind, volume_id, e)
                results.append((kind, volume_id, str(e)))
        return results

    def resume_orphan(self, volume_id):
        """Finish a flow of ``volume_id`` whose process is gone.

        A flow in the logbook whose volume lock is free was left by a
        process that died (a killed CLI, an agent thread): the running
        agent picks it up without a restart.
        :returns: the kind of flow finished, or None if there was none.
        :raises LockTimeout: its process still runs it (the lock is held).
        """
        for book, detail in self._details():
            if detail.meta['volume_id'] == volume_id:
                self._resume(book, detail, lock_timeout=0)
                return detail.meta['kind']
        return None

    def _resume(self, book, detail, lock_timeout=None):
        kind, volume_id = detail.meta['kind'], detail.meta['volume_id']
        with self._lock(volume_id, lock_timeout):
            if book.uuid not in {b.uuid for b, _d in self._details()}:
                return  # its process finished it while we looked
            LOG.info('resuming %s of %s from the logbook', kind, volume_id)
            flow = FACTORIES[kind](volume_id, **detail.meta['options'])
            self._finish(book, flow, detail, None)

    def reconcile(self):
        """Compare the logbook with what exists here; finish or clean up.

        For every volume with a trace on this host (zvols, dm devices,
        origin exports; ReplicaEngine.found) and no flow in flight, the
        engine puts its devices right (ReplicaEngine.reconcile) and the
        flow still needed runs: a seed (with cut-over) for a device still
        on its origin, a sync for a warm replica with no device.
        :returns: [(volume_id, what was done, flow run or None)]; a
            volume that fails is reported with the error and the others
            still run.
        """
        busy = {volume_id for _kind, volume_id, _state in self.in_flight()}
        report = []
        for volume_id in self.replica.found():
            if volume_id in busy:
                report.append((volume_id, 'flow in flight', None))
                continue
            try:
                with self._lock(volume_id):
                    done, needed = self.replica.reconcile(volume_id)
                if needed:
                    getattr(self, needed)(volume_id)
            except Exception as e:
                LOG.error('reconciling %s failed: %s', volume_id, e)
                done, needed = 'failed: %s' % e, None
            report.append((volume_id, done, needed))
        return report

    def recover(self):
        """What a starting agent does first: resume, then reconcile."""
        return self.resume(), self.reconcile()
