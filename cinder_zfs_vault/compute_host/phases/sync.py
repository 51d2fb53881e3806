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

"""4. Sync: ``zfs send -I`` of a new sync point back to the vault.

Planned from both sides' snapshot lists (plan.py) before a byte moves; the
vault lands it only under this host's lease generation.
"""

import collections

from oslo_log import log as logging

from cinder_zfs_vault.compute_host import phases
from cinder_zfs_vault.compute_host import vault_client
from cinder_zfs_vault import exception
from cinder_zfs_vault import lease as leaselib
from cinder_zfs_vault import plan
from cinder_zfs_vault import sync_points as points
from cinder_zfs_vault import transfer

LOG = logging.getLogger(__name__)

#: What :meth:`Sync.sync` did.
SyncResult = collections.namedtuple('SyncResult',
                                    'snapshot guid bytes seconds')


class Sync(object):
    """The sync phase of the replica engine (replica.py).

    A mixin: it uses the engine's parts (``vault``, ``compute_zfs``, ``dm``,
    ``connector``, ``settings``) and its other phases.
    """

    def sync(self, volume_id, rate=None, progress=None, preempted=None):
        """Send the changes since the last sync point to the vault.

        Snapshot the local replica, ``zfs send -I`` from the newest common
        sync point into the vault zvol, check the received GUID, then move
        the lease's synced GUID and prune old sync points.
        :param rate: bytes/second; 0 is unlimited, None the upload limit
            in settings. 0 is a sync a caller waits on (a detach's final
            sync, a snapshot's sync point): the vault lands it ahead of
            seeds and periodic syncs (``receive-now``, slots.py).
        :param progress: callable(bytes_done, bytes_expected).
        :param preempted: callable() -> bool: a sync not waited on (rate
            not 0) gives way while the vault has granted it no slot yet
            (transfer.pipe); a caller then has the disk.
        :raises Preempted: it gave way; nothing was sent.
        :raises Fenced: the vault refused the sync: the lease is not this
            host's generation any more (checked by the vault when the sync
            lands; the vault is unchanged).
        :raises Diverged: the vault zvol has snapshots after the common
            one, or was modified after it (``zfs recv`` refuses the stream
            before a block lands; plan.py says why the plan cannot).
        :returns: :data:`SyncResult`.
        """
        n = self.names(volume_id)
        if not self.compute_zfs.exists(n.local):
            raise exception.InvalidInput(
                '%s has no local replica on %s (not attached here, not '
                'seeded, or in non-sync mode)' % (n.vault, self.host))
        generation = self._generation(n)
        info = self.vault.info(n.volume_id)
        if rate == 0:
            preempted = None  # a caller waits on this one
        if info['resume_token']:
            info = self._resume_cut_sync(n, generation, info, rate,
                                         preempted)
        snap = '%s@%s' % (n.local, points.next_name(
            self.compute_zfs.snapshots(n.local)))
        self.compute_zfs.snapshot(snap)
        local_snaps = self.compute_zfs.snapshots(n.local)
        step = plan.step(local_snaps, info['snapshots'], local_snaps[-1])
        if isinstance(step, plan.Diverged):
            # Refused before a byte moves; never rolled back (no recv -F).
            raise exception.Diverged(plan.explain(step, n.local, n.vault))
        if not isinstance(step, plan.Incremental):
            raise exception.Diverged('%s holds no snapshot of %s to build '
                                     'on' % (n.vault, n.local))
        base, guid = step.base['name'], step.target['guid']
        expected = transfer.estimate(self.compute_zfs, snap, base)
        result = vault_client.pipe(
            self.compute_zfs.stream_argv(transfer.send_argv(snap, base=base)),
            self.vault.receive_argv(n.volume_id, generation, guid,
                                    urgent=rate == 0),
            rate=self._rate(n, 'upload_rate', rate, info),
            stall_timeout=self.settings.stall_timeout,
            granted_by='recv', slot_timeout=self.settings.slot_timeout,
            progress=phases.reporter(progress, expected),
            preempted=preempted)
        # The vault landed it under our generation, with our GUID, or the
        # receiving end failed (and pipe raised the vault's error).
        self._prune(n, snap.split('@')[1])
        return SyncResult(snap, guid, result.bytes, result.seconds)

    def _resume_cut_sync(self, n, generation, info, rate, preempted):
        """Finish a sync whose stream was cut (its token is on the vault).

        A receive left half done blocks every later receive into the zvol;
        resuming it sends only the missing bytes (``zfs-send(8)`` ``-t``).
        :returns: the vault's info after it.
        """
        LOG.info('%s: resuming a cut sync from its token', n.vault)
        vault_client.pipe(
            self.compute_zfs.stream_argv(
                transfer.send_argv(token=info['resume_token'])),
            self.vault.receive_argv(n.volume_id, generation,
                                    urgent=rate == 0),
            rate=self._rate(n, 'upload_rate', rate, info),
            stall_timeout=self.settings.stall_timeout,
            granted_by='recv', slot_timeout=self.settings.slot_timeout,
            preempted=preempted)
        return self.vault.info(n.volume_id)

    def _generation(self, n):
        """The lease generation this host was given.

        It is recorded with the replica, so a host that was fenced cannot
        pick up a newer one.
        """
        for dataset in (n.local, n.cow):
            value = self._recorded_generation(dataset)
            if value is not None:
                return value
        raise leaselib.Fenced('%s: no lease generation recorded here'
                              % n.local)

    def _recorded_generation(self, dataset):
        """The lease generation recorded on ``dataset``.

        :returns: an int; None when none is, or there is no such dataset.
        """
        try:
            value = self.compute_zfs.get(
                dataset, (leaselib.GENERATION,))[leaselib.GENERATION]
        except exception.NotFound:
            return None
        return None if value in ('', '-') else int(value)

    def _prune(self, n, newest):
        """Keep the newest local sync points (the vault prunes its own).

        The newest is held as the next incremental base.
        """
        zfs, keep = self.compute_zfs, self.settings.keep_local
        kept = points.of(zfs.snapshots(n.local))
        zfs.hold('%s@%s' % (n.local, newest), points.HOLD_TAG)
        for snap in kept[:-keep] if keep else kept:
            if snap['snap'] == newest:
                continue
            zfs.release(snap['name'], points.HOLD_TAG)
            self._destroy(zfs, snap['name'])
        for snap in kept[-keep:]:
            if snap['snap'] != newest:
                zfs.release(snap['name'], points.HOLD_TAG)

    def last_synced(self, volume_id):
        """The local sync point the vault last confirmed, or None.

        Known here, without the vault (a cut network): the newest sync
        point held as the next incremental base (:meth:`_prune` holds it
        once the vault landed it), else the seed's (the oldest). Newer ones
        are syncs that did not land.
        :returns: its row (``ZFS.snapshots``).
        """
        n = self.names(volume_id)
        kept = points.of(self.compute_zfs.snapshots(n.local))
        held = [s for s in kept if s['userrefs']]
        if held:
            return held[-1]
        return kept[0] if kept else None

    def unsynced_bytes(self, volume_id):
        """Bytes written locally since the vault's last sync point.

        ``written@<snapshot>`` of :meth:`last_synced` (``zfsprops(7)``):
        what a cut network keeps from the vault grows here, also across
        syncs that did not land.
        """
        n = self.names(volume_id)
        synced = self.last_synced(volume_id)
        prop = 'written@' + synced['snap'] if synced else 'written'
        return int(self.compute_zfs.get(n.local, (prop,))[prop])
