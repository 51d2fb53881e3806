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

"""Syncs landing in the vault, fenced by the lease generation on the vault.

Fencing is the vault's job (DESIGN.md): a host whose lease was broken must
not land a sync, even one whose stream was already in flight. So a receive
and a lease break exclude each other under the lease's lock:

1. *begin* (under the lock): the sender must own the lease under the
   generation it names; the ``zfs recv`` child is started and registered
   (pid, host, generation, the newest snapshot before it) in a file of the
   vault's state directory;
2. the stream flows outside the lock (a break is not kept waiting);
3. *land* (under the lock): if the generation still matches, the newest
   received snapshot becomes the lease's synced GUID and old sync points
   are pruned; if not, whatever the receive added is rolled back.

A break (:meth:`Landing.revoke`, called by the lease break under the same
lock) kills a registered receive that is still running (``zfs recv -s``
then keeps the zvol as it was, the partial stream in its hidden clone),
aborts that partial state (``zfs recv -A``) and rolls back every snapshot a
finished but not yet landed receive added. Whichever of the two takes the
lock first wins, and a break that wins leaves the vault zvol exactly as it
was before the fenced stream began.
"""

import json
import os
import signal
import time

from oslo_log import log as logging

from cinder_zfs_vault import exception
from cinder_zfs_vault import lease as leaselib
from cinder_zfs_vault import sync_points

LOG = logging.getLogger(__name__)


def _start_time(pid):
    """``pid``'s start time (``proc(5)``, stat field 22), None if gone.

    With the pid it names one process for good: a recycled pid has
    another start time, so it is never killed by mistake. (The command
    line is no such mark: it reads empty while a new process execs.)
    """
    try:
        with open('/proc/%d/stat' % pid) as f:
            stat = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces: split after it.
    fields = stat[stat.rindex(')') + 2:].split()
    if fields[0] == 'Z':  # exited, not yet reaped
        return None
    return fields[19]


def _alive(pid, start_time):
    return start_time is not None and _start_time(pid) == start_time


class Landing(object):
    """Receives of syncs into vault zvols, and their revocation.

    :param zfs: the vault's :class:`~cinder_zfs_vault.zfs.ZFS`.
    :param leases: the vault's :class:`~cinder_zfs_vault.lease.Leases`
        (their lock is the one a break takes).
    :param directory: where receives in flight are registered.
    :param keep: sync points kept on the vault as restore points.
    :param kill_timeout: seconds to wait for a killed receive to exit.
    """

    def __init__(self, zfs, leases, directory, keep=3, kill_timeout=60):
        self.zfs = zfs
        self.leases = leases
        self.directory = directory
        self.keep = keep
        self.kill_timeout = kill_timeout
        os.makedirs(directory, mode=0o700, exist_ok=True)

    def _record(self, dataset):
        return os.path.join(self.directory,
                            dataset.replace('/', '_') + '.json')

    def _read(self, dataset):
        try:
            with open(self._record(dataset)) as f:
                return json.load(f)
        except FileNotFoundError:
            return None

    def _forget(self, dataset):
        try:
            os.unlink(self._record(dataset))
        except FileNotFoundError:
            pass

    # -- a sync landing -------------------------------------------------------

    def begin(self, dataset, host, generation, start):
        """Check the lease and start the receive, under the lease's lock.

        :param start: callable() -> a started ``subprocess.Popen`` of
            ``zfs recv`` into ``dataset``.
        :returns: the Popen.
        :raises Fenced: ``host`` does not hold ``generation`` (nothing ran).
        """
        with self.leases.lock(dataset):
            self.leases.check(dataset, host, generation)
            snaps = self.zfs.snapshots(dataset)
            child = start()
            record = {'pid': child.pid, 'started': _start_time(child.pid),
                      'host': host, 'generation': generation,
                      'base_guid': snaps[-1]['guid'] if snaps else None}
            with open(self._record(dataset), 'w') as f:
                json.dump(record, f)
            return child

    def land(self, dataset, host, generation, ok, expect_guid=None):
        """Make a finished receive the disk's state, if still allowed.

        :param ok: whether the receive exited 0.
        :param expect_guid: GUID the sender's newest snapshot has; the
            landed snapshot must have it.
        :returns: the landed snapshot row (``zfs.snapshots``).
        :raises Fenced: the lease was broken meanwhile; the vault zvol is
            as it was before the stream (rolled back here or by the break).
        :raises Diverged: what landed is not the sender's snapshot.
        """
        with self.leases.lock(dataset):
            record = self._read(dataset)
            lease = self.leases.get(dataset)
            if lease.owner != host or lease.generation != generation:
                if record and record.get('pid') is not None:
                    self._undo(dataset, record)
                self._forget(dataset)
                raise leaselib.Fenced(
                    '%s: lease broken while %s/%d was sending: refused, '
                    'the vault is unchanged' % (dataset, host, generation))
            self._forget(dataset)
            if not ok:
                return None
            newest = self.zfs.snapshots(dataset)[-1]
            if not sync_points.is_sync_point(newest['snap']) or (
                    expect_guid and newest['guid'] != expect_guid):
                raise exception.Diverged(
                    '%s: received %s (GUID %s), sender has GUID %s'
                    % (dataset, newest['snap'], newest['guid'],
                       expect_guid))
            self.leases.record_sync(dataset, newest['guid'])
            self._prune(dataset, newest['snap'])
            LOG.info('%s: sync point %s from %s/%d landed.', dataset,
                     newest['snap'], host, generation)
            return newest

    def _prune(self, dataset, newest):
        """Keep ``keep`` sync points; hold the newest (the next base)."""
        self.zfs.hold('%s@%s' % (dataset, newest), sync_points.HOLD_TAG)
        points = sync_points.of(self.zfs.snapshots(dataset))
        for snap in points[:-self.keep] if self.keep else points:
            if snap['snap'] == newest:
                continue
            self.zfs.release(snap['name'], sync_points.HOLD_TAG)
            try:
                self.zfs.destroy(snap['name'])
            except (exception.NotFound, exception.Busy,
                    exception.HasDependents) as e:
                # A Cinder clone or a user hold keeps it: not ours to force.
                LOG.info('%s kept: %s', snap['name'], e)
        for snap in points[-self.keep:]:
            if snap['snap'] != newest:
                self.zfs.release(snap['name'], sync_points.HOLD_TAG)

    # -- a break --------------------------------------------------------------

    def revoke(self, dataset):
        """Stop and undo a receive in flight into ``dataset``.

        Called by the lease break with the lease's lock held. Idempotent.
        :returns: True if a receive was stopped or undone.
        """
        record = self._read(dataset)
        if record is None:
            return False
        pid, started = record.get('pid'), record.get('started')
        if pid and _alive(pid, started):
            LOG.warning('%s: killing the receive of fenced %s/%d (pid %d)',
                        dataset, record['host'], record['generation'], pid)
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + self.kill_timeout
            while _alive(pid, started):
                if time.monotonic() > deadline:
                    raise exception.CommandFailed(
                        '%s: the fenced receive (pid %d) did not exit in '
                        '%ss' % (dataset, pid, self.kill_timeout))
                time.sleep(0.1)
        self._undo(dataset, record)
        # The receiver's own land() finds no pid and changes nothing.
        record['pid'] = None
        with open(self._record(dataset), 'w') as f:
            json.dump(record, f)
        return True

    def _undo(self, dataset, record):
        """Abort a partial receive; roll back what a fenced one added."""
        self.zfs.abort_receive(dataset)
        snaps = self.zfs.snapshots(dataset)
        guids = [s['guid'] for s in snaps]
        base = record.get('base_guid')
        if base not in guids:
            return
        later = snaps[guids.index(base) + 1:]
        if not later:
            return
        if not all(sync_points.is_sync_point(s['snap']) for s in later):
            # Only sync points come in a sync stream; anything else is
            # someone's snapshot, which a rollback would destroy.
            raise exception.CommandFailed(
                '%s: snapshots %s follow the fenced sync; not rolled back'
                % (dataset, [s['snap'] for s in later]))
        for s in later:
            self.zfs.release(s['name'], sync_points.HOLD_TAG)
        self.zfs.rollback(snaps[guids.index(base)]['name'], recursive=True)
        LOG.warning('%s: rolled back to %s, dropping %s of fenced %s/%d',
                    dataset, snaps[guids.index(base)]['snap'],
                    [s['snap'] for s in later], record['host'],
                    record['generation'])
