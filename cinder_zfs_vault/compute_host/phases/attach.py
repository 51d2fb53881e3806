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

"""1. Attach: the lease, the origin, and a device at once.

The device is a dm ``snapshot`` of the vault zvol, exported read-only by the
vault to this host's initiator and logged in with os-brick, over a sparse
local COW zvol (or, in non-sync mode, a ``linear`` map of the read-write
LUN). What an attach makes is undone, newest first, if a later step fails.
"""

import contextlib

from oslo_log import log as logging
from oslo_utils import excutils

from cinder_zfs_vault.compute_host import dm as dmlib
from cinder_zfs_vault import lease as leaselib
from cinder_zfs_vault import protocol
from cinder_zfs_vault import zfs as zfslib

LOG = logging.getLogger(__name__)

#: Bytes of a COW zvol's exception store beyond its disk's chunks (the
#: kernel's device-mapper/snapshot.rst: a persistent store keeps a
#: metadata chunk per chunk-sized group of exceptions).
COW_METADATA = 64 * 1024 * 1024


def cow_size(volsize):
    """Bytes of the COW zvol of a disk of ``volsize`` bytes.

    Room for every chunk of the disk, a sixteenth more for the exception
    store's metadata, and :data:`COW_METADATA`.
    """
    return volsize + volsize // 16 + COW_METADATA


class Attach(object):
    """The attach phase of the replica engine (replica.py).

    A mixin: it uses the engine's parts (``vault``, ``compute_zfs``, ``dm``,
    ``connector``, ``settings``) and its other phases.
    """

    def attach(self, volume_id):
        """Take the lease and give the VM a device at once.

        The device is a dm ``snapshot`` of the vault zvol (over a read-only
        iSCSI export) with a sparse local COW zvol, unless a warm local
        replica from an earlier attach is still here, in which case it is a
        ``linear`` map of that replica. Idempotent.

        :returns: ``/dev/mapper/zvault-<id>``.
        :raises LeaseHeld: another host has the disk (nothing changed).
        :raises Fenced: this host was fenced from the disk (the vault
            refuses it until an operator allows it back), or a replica left
            here from before a fence is stale: the vault's generation is
            not the one it recorded (nothing is used or re-stamped).
        """
        n = self.names(volume_id)
        lease = self.vault.lease(volume_id)
        gen = lease['generation']
        held = {leaselib.GENERATION: gen}
        self._refuse_stale(n, gen)
        if lease['sync_mode'] == 'nosync' and not self._replica_here(n):
            return self._attach_direct(n, lease)
        if self.dm.exists(n.dm):
            return n.device
        size = lease['volsize']
        sectors = dmlib.sectors(size)
        if self._seeded(n):
            local = zfslib.wait_for_zvol(n.zvol(n.local),
                                         self.settings.device_timeout)
            if self.compute_zfs.exists(n.cow):
                return self._map_merge(n, sectors, local)
            # Warm re-attach: the replica holds every write; map it directly.
            self.dm.create(n.dm, dmlib.linear_table(sectors, local))
            return n.device
        with contextlib.ExitStack() as undo:
            # On a failure, only what this call made goes, newest first. A
            # COW zvol that was here already (a re-map after a reboot)
            # holds the VM's writes: it stays.
            if lease.get('taken'):
                undo.callback(self._release_if_nothing_here, n, gen)
            origin = self._connect_origin(n, gen)
            undo.callback(self._disconnect_origin, n, gen)
            if not self.compute_zfs.exists(n.cow):
                # Room for every chunk plus the exception store's metadata,
                # reserved now (thick: refreservation): dm-snapshot
                # invalidates a snapshot whose exception store meets
                # ENOSPC, and the VM's every write since attach would be
                # lost (issue 21, 5). A pool without the room refuses
                # the attach here (OutOfSpace), with nothing left.
                self.compute_zfs.create_volume(n.cow, cow_size(size),
                                               sparse=False, properties=held)
                undo.callback(self._destroy, self.compute_zfs, n.cow)
            self.notify('attach.cow')
            cow = zfslib.wait_for_zvol(n.zvol(n.cow),
                                       self.settings.device_timeout)
            self._stack(n, sectors, n.dm_snap,
                        dmlib.snapshot_table(sectors, origin, cow), undo)
            undo.pop_all()
        return n.device

    def _stack(self, n, sectors, below, table, undo):
        """The VM's device, a ``linear`` over ``below`` (made if missing).

        :param undo: an ExitStack that removes ``below`` if this made it
            (removing a merge mid-way loses nothing either: it goes on
            from the exception store when mapped again).
        """
        if not self.dm.exists(below):
            self.dm.create(below, table)
            undo.callback(self.dm.remove, below)
        self.dm.create(n.dm, dmlib.linear_table(sectors,
                                                self.dm.devno(below)))

    def _map_merge(self, n, sectors, local):
        """Map a seeded replica and its COW zvol as the cut-over's merge.

        After a reboot the devices are gone and a cut-over may have been
        merging: the chunks it merged are in the replica only, no longer in
        the COW zvol, so the origin with the COW would lose them. A merge
        of the replica with the COW is right whether it had begun or not
        (the replica is the vault zvol as of the seed, and a leased vault
        zvol is not written); dm-snapshot goes on with an interrupted merge
        from its persistent exception store (the kernel's
        device-mapper/snapshot.rst). :meth:`cutover` finishes it.
        """
        cow = zfslib.wait_for_zvol(n.zvol(n.cow),
                                   self.settings.device_timeout)
        with contextlib.ExitStack() as undo:
            self._stack(n, sectors, n.dm_merge,
                        dmlib.merge_table(sectors, local, cow), undo)
            undo.pop_all()
        return n.device

    def _release_if_nothing_here(self, n, generation):
        """Give back a lease an attach took, if it left no data here."""
        if not self._replica_here(n):
            self.vault.release(n.volume_id, generation)

    def _replica_here(self, n):
        return (self.compute_zfs.exists(n.local)
                or self.compute_zfs.exists(n.cow))

    def _refuse_stale(self, n, generation):
        """Refuse a replica or COW zvol of another lease generation.

        Only a re-attach under the same lease (the vault gives the owner
        its generation again) may use what is here; anything else was
        fenced and holds writes the vault will never take.
        """
        try:
            mine = self._generation(n)
        except leaselib.Fenced:
            return  # nothing here
        if mine != generation:
            self.vault.release(n.volume_id, generation)
            raise leaselib.Fenced(
                '%s: a replica of lease generation %d is on %s, the vault '
                'leased generation %d: it was fenced; discard it first '
                '(zfs-vault discard VOLUME)'
                % (n.vault, mine, self.host, generation))

    def _attach_direct(self, n, lease):
        """Non-sync mode: the VM writes the vault zvol over iSCSI.

        As the PRAGMA "fix image" stage: no local replica, no sync; the
        lease still keeps every other host off the disk. The device is a
        ``linear`` map of the read-write iSCSI LUN, under the same name.
        A failure leaves no session, export or lease this call made.
        """
        if self.dm.exists(n.dm):
            return n.device
        gen = lease['generation']
        with contextlib.ExitStack() as undo:
            if lease.get('taken'):
                undo.callback(self._release_if_nothing_here, n, gen)
            lun = self._connect_origin(n, gen)
            undo.callback(self._disconnect_origin, n, gen)
            self.dm.create(n.dm, dmlib.linear_table(
                dmlib.sectors(lease['volsize']), lun))
            undo.pop_all()
        return n.device

    def _connect_origin(self, n, generation):
        """Log in to the origin the vault exports for this host.

        Read-only, or read-write for a disk in non-sync mode: the vault
        decides from the disk's mode.
        """
        props = self.vault.export(n.volume_id, generation)
        try:
            info = self.connector.connect_volume(props)
        except Exception:
            with excutils.save_and_reraise_exception():
                # os-brick may have logged in before it failed (no device
                # found in time): log out, then the export may go.
                try:
                    self.connector.disconnect_volume(props, None, force=True,
                                                     ignore_errors=True)
                finally:
                    self.vault.unexport(n.volume_id, generation)
        self._origin[n.volume_id] = (props, info)
        return info['path']

    def _disconnect_origin(self, n, generation=None):
        """Log out of the origin and remove its export (idempotent).

        After a restart the session's properties are rebuilt from the names
        (os-brick finds the devices from IQN, portal and LUN).
        :param generation: the lease's, if known (else read from what is
            here, or asked of the vault).
        """
        props, info = self._origin.pop(n.volume_id, (None, None))
        if props is None:
            props = {'target_iqn': protocol.origin_iqn(n.name),
                     'target_portal': self.portal, 'target_lun': 0}
        try:
            self.connector.disconnect_volume(props, info, force=True)
        except Exception:
            # os-brick logs out whatever fails (force), then raises: a
            # flush failed. While the disk is this host's, that may be
            # the VM's writes (non-sync mode): the caller must know. A
            # fenced host's export was removed by the break: its flush
            # cannot succeed, and the break reported what it lost.
            if self._vault_generation(n) is not None:
                raise
            LOG.warning('%s: the vault revoked the origin (lease broken); '
                        'its session is gone without a flush', n.vault)
        try:
            generation = generation or self._generation(n)
        except leaselib.Fenced:
            generation = self._vault_generation(n)
        if generation is not None:
            try:
                self.vault.unexport(n.volume_id, generation)
            except leaselib.Fenced:
                pass  # a break took the export away already

    def _vault_generation(self, n):
        """The generation the vault has this host hold, or None."""
        try:
            lease = self.vault.info(n.volume_id)['lease']
        except protocol.NotYours:
            return None
        return lease['generation'] if lease['owner'] == self.host else None
