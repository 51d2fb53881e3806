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

"""5. Detach: the final sync, the vault's GUID confirmed, the replica retired.

Also the way out for a fenced host (``discard_fenced``).
"""

from oslo_log import log as logging

from cinder_zfs_vault.compute_host import dm as dmlib
from cinder_zfs_vault import exception
from cinder_zfs_vault import protocol
from cinder_zfs_vault import sync_points as points
from cinder_zfs_vault import zfs as zfslib

LOG = logging.getLogger(__name__)


class Detach(object):
    """The detach phase of the replica engine (replica.py).

    A mixin: it uses the engine's parts (``vault``, ``compute_zfs``, ``dm``,
    ``connector``, ``settings``) and its other phases.
    """

    def detach(self, volume_id):
        """Return the disk to the vault.

        The device must be unused. It is removed (after the seed and
        cut-over if they had not happened, so no write is stranded in the
        COW zvol), a final unthrottled sync runs, and only once the vault
        reports the final snapshot's GUID is the local replica destroyed
        and the lease released. Idempotent; the steps are :meth:`unmap`,
        :meth:`sync` (``rate=0``) and :meth:`retire`, which the detach flow
        (flows.py) runs as separate tasks.
        :raises Busy: the device is open.
        :returns: the final :data:`SyncResult`, or None if nothing was out.
        """
        if not self.unmap(volume_id):
            self.retire(volume_id, None)
            return None
        final = self.sync(volume_id, rate=0)
        self.retire(volume_id, final.snapshot)
        return final

    def unmap(self, volume_id):
        """Remove the VM's device, the replica complete first.

        :raises Busy: the device is open.
        :returns: True if a local replica is here to sync back.
        """
        n = self.names(volume_id)
        if not self.dm.exists(n.dm) and self.compute_zfs.exists(n.cow):
            # The device went (a reboot) with writes in the COW zvol: map it
            # again (its exception store is persistent) so they are merged.
            self.attach(volume_id)
        if self.dm.exists(n.dm):
            if self.dm.in_use(n.dm):
                raise exception.Busy('%s is in use' % n.device)
            mapping = self.mapping(volume_id)
            if mapping == 'vault':
                # Non-sync mode: every write is in the vault already.
                self.dm.remove(n.dm)
                self._disconnect_origin(n)
                return False
            self.complete(volume_id)
            self.dm.remove(n.dm)
        return self.compute_zfs.exists(n.local)

    def remap(self, volume_id):
        """Give back the device :meth:`unmap` removed (a failed detach)."""
        n = self.names(volume_id)
        if self.dm.exists(n.dm) or not self.compute_zfs.exists(n.local):
            return
        sectors = dmlib.sectors(self._volsize(self.compute_zfs, n.local))
        local = zfslib.wait_for_zvol(n.zvol(n.local),
                                     self.settings.device_timeout)
        self.dm.create(n.dm, dmlib.linear_table(sectors, local))

    def retire(self, volume_id, final_snapshot):
        """Destroy the local replica once the vault holds it; release.

        A replica changed after its final sync point while no device is
        over it is synced once more first: a reboot between the final sync
        and this imports the pool again, and every import rewrites each
        zvol's objset block (``written`` reads 8192 bytes with no data
        changed; measured on OpenZFS 2.1.11).
        :param final_snapshot: the final sync point (``pool/vol@zv-…``),
            or None when no replica was out.
        :raises Diverged: the vault does not hold the last sync point with
            the replica's GUID, or the replica was written after it with
            its device mapped again (nothing destroyed either way).
        """
        n = self.names(volume_id)
        if final_snapshot is None or not self.compute_zfs.exists(n.local):
            # Nothing out, or destroyed after confirmation by an earlier
            # try: only the lease may be left.
            self._release_if_ours(n)
            return
        if self.unsynced_bytes(volume_id):
            if self.dm.exists(n.dm):
                raise exception.Diverged('%s was written after the final '
                                         'sync' % n.local)
            LOG.info('%s changed after its final sync point, with no '
                     'device over it: syncing it again', n.local)
            self.sync(volume_id, rate=0)
        # The final sync point, or the one after it that an earlier try
        # of this made (a retry is handed the first).
        synced = self.last_synced(volume_id)
        snap, local_guid = synced['snap'], synced['guid']
        generation = self._generation(n)
        # Raises Diverged (nothing destroyed) unless the vault holds it.
        self.vault.confirm(n.volume_id, generation, snap, local_guid)
        # The vault holds every write now: the replica may go. The vault
        # releases its own holds with the lease.
        for s in self.compute_zfs.snapshots(n.local):
            self.compute_zfs.release(s['name'], points.HOLD_TAG)
        self.compute_zfs.destroy(n.local, recursive=True)
        self.vault.release(n.volume_id, generation)

    def discard_fenced(self, volume_id):
        """Drop this host's replica after its lease was broken.

        Only when fenced: the vault's lease generation has moved past the one
        this host recorded, so the vault will never accept these writes and
        the disk's truth is the vault's copy as of the last sync (the loss
        window was reported when the lease was broken).
        :raises InvalidInput: this host still holds the lease (use detach).
        """
        n = self.names(volume_id)
        try:
            lease = self.vault.info(n.volume_id)['lease']
        except protocol.NotYours:
            lease = None  # free, or another host's: not this host's
        if lease and lease['owner'] == self.host:
            # Whatever generation is recorded here (none, after a crash
            # between the seed's receive and recording it): the vault has
            # not fenced this host, so its writes are not lost yet.
            raise exception.InvalidInput('%s still holds %s: detach it'
                                         % (self.host, n.vault))
        if self.dm.exists(n.dm):
            if self.dm.in_use(n.dm):
                raise exception.Busy('%s is in use' % n.device)
            self.dm.remove(n.dm)
        for name in (n.dm_merge, n.dm_snap):
            self.dm.remove(name)
        self._disconnect_origin(n)
        for dataset in (n.local, n.cow):
            if self.compute_zfs.exists(dataset):
                for snap in self.compute_zfs.snapshots(dataset):
                    self.compute_zfs.release(snap['name'], points.HOLD_TAG)
                self.compute_zfs.destroy(dataset, recursive=True)

    def _release_if_ours(self, n):
        generation = self._vault_generation(n)
        if generation is not None:
            self.vault.release(n.volume_id, generation)
