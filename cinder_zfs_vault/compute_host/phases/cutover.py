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

"""3. Cut-over: the live device moves from the origin to the local replica.

Two table swaps of the top ``linear`` (``snapshot`` -> ``snapshot-merge`` ->
``linear`` of the replica); see dm.py for the device stack.
"""

import time

from cinder_zfs_vault.compute_host import dm as dmlib
from cinder_zfs_vault import exception
from cinder_zfs_vault import lease as leaselib
from cinder_zfs_vault import zfs as zfslib


class CutOver(object):
    """The cut-over phase of the replica engine (replica.py).

    A mixin: it uses the engine's parts (``vault``, ``compute_zfs``, ``dm``,
    ``connector``, ``settings``) and its other phases.
    """

    def cutover(self, volume_id):
        """Switch the live device from the iSCSI origin to the local copy.

        The VM's device is pointed from the dm ``snapshot`` to a new
        ``snapshot-merge`` of the local copy with the COW zvol; when the
        merge is done it is pointed at the local copy itself; then the COW
        zvol, the iSCSI session and the origin export go. The VM's I/O
        pauses twice, for one table swap of a ``linear`` each. Idempotent:
        a cut-over interrupted at any step is finished by calling it again,
        also after its devices went (a reboot): the COW zvol is mapped again
        as a merge with the replica (Attach._map_merge), never dropped.
        :raises InvalidInput: the local copy is not seeded yet.
        :raises CommandFailed: the merge did not finish in merge_timeout.
        :returns: the I/O pauses, seconds (two on a full cut-over).
        """
        n = self.names(volume_id)
        if not self._seeded(n):
            raise exception.InvalidInput('%s is not seeded yet' % n.local)
        sectors = dmlib.sectors(self._volsize(self.compute_zfs, n.local))
        local = zfslib.wait_for_zvol(n.zvol(n.local),
                                     self.settings.device_timeout)
        if self.mapping(volume_id) is None and self.compute_zfs.exists(n.cow):
            # The devices went (a reboot) with the VM's writes in the COW
            # zvol, unmerged or half merged: map them again, as a merge
            # (attach), so that the merge below finishes. Never drop them.
            self.attach(volume_id)
        pauses = []
        if self.mapping(volume_id) == 'snapshot':
            with self.quiesce(volume_id):
                pauses.append(self._switch_to_merge(n, sectors, local))
        if self.mapping(volume_id) == 'merge':
            self.dm.wait_merged(n.dm_merge, self.settings.merge_timeout)
            with self.quiesce(volume_id):
                pauses.append(self.dm.swap(
                    n.dm, dmlib.linear_table(sectors, local)))
        # Leftovers of an interrupted cut-over; the VM maps the replica now.
        self.dm.remove(n.dm_merge)
        self.dm.remove(n.dm_snap)
        self._disconnect_origin(n)
        self._keep_generation(n)
        self._destroy(self.compute_zfs, n.cow)
        return pauses

    def _keep_generation(self, n):
        """Record the lease generation on the replica before the COW goes.

        A seed records it once its receive is checked; one whose receive
        committed but which failed or was killed before that (lab
        2026-12-06: a paced seed's pipe failed at its very end) leaves it
        on the COW zvol only. Destroyed with it, every later sync would be
        refused as fenced (sync._generation) and the disk could not be
        detached.
        """
        held = self._recorded_generation(n.cow)
        if held is not None and self._recorded_generation(n.local) is None:
            self.compute_zfs.set(n.local, {leaselib.GENERATION: str(held)})

    def complete(self, volume_id, progress=None):
        """Seed unthrottled and cut over now a disk still on its origin.

        For a caller that waits on the local replica: a detach (no write
        may stay in the COW zvol) and a sync point asked for now (a
        snapshot of the attached volume; issue 9). A seed already running
        in another thread holds the disk's flow lock: the caller's flow
        waits for it, and :meth:`Urgency.waiting` is how it goes faster.
        :param progress: callable(bytes_done, bytes_expected) of the seed.
        :returns: True if the disk was not local yet.
        """
        if self.mapping(volume_id) not in ('snapshot', 'merge'):
            return False  # local already, non-sync mode, or not here
        self.seed(volume_id, rate=0, progress=progress)
        self.cutover(volume_id)
        return True

    def _switch_to_merge(self, n, sectors, local):
        """Point the VM's device at a new snapshot-merge device.

        The ``snapshot`` device is suspended (idle and flushed) before the
        merge device reads the same COW zvol's exception store, and removed
        after, so the two never run on the COW together.
        :returns: seconds the VM's I/O was paused.
        """
        # Known before the pause: nothing inside it that need not be.
        merging = self.dm.exists(n.dm_merge)
        table = dmlib.merge_table(sectors, local, n.zvol(n.cow))
        self.dm.suspend(n.dm)
        start = time.monotonic()
        try:
            self.dm.suspend(n.dm_snap)
            self.notify('cutover.suspended')
            if not merging:
                self.dm.create(n.dm_merge, table, udev=False)
            self.dm.reload(n.dm, dmlib.linear_table(
                sectors, self.dm.devno(n.dm_merge)))
        except Exception:
            # Back onto the snapshot, which holds every write so far.
            self.dm.resume(n.dm_snap)
            self.dm.remove(n.dm_merge)
            self.dm.resume(n.dm)
            raise
        self.dm.resume(n.dm)
        pause = time.monotonic() - start
        self.dm.remove(n.dm_snap)
        return pause

    def mapping(self, volume_id):
        """What the VM's device maps now.

        :returns: 'snapshot' (the iSCSI origin with the COW zvol), 'merge'
            (cut-over under way), 'local' (the local replica), 'vault' (the
            vault zvol over iSCSI, non-sync mode), or None (no device on
            this host).
        """
        n = self.names(volume_id)
        if not self.dm.exists(n.dm):
            return None
        below = self.dm.deps(n.dm)
        if n.dm_snap in below:
            return 'snapshot'
        if n.dm_merge in below:
            return 'merge'
        # Zvols are zd<N> block devices; anything else is the iSCSI LUN.
        return 'local' if all(d.startswith('zd') for d in below) \
            else 'vault'
