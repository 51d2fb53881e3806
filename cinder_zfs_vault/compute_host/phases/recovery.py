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

"""After a crash: what is on this host, and a state a flow can go on from.
"""

from cinder_zfs_vault import status
from cinder_zfs_vault import validation

State = status.State


class Recovery(object):
    """The recovery phase of the replica engine (replica.py).

    A mixin: it uses the engine's parts (``vault``, ``compute_zfs``, ``dm``,
    ``connector``, ``settings``) and its other phases.
    """

    def found(self):
        """Volume ids with a trace on this host.

        Compute zvols (replica or COW) and dm devices. (The vault knows
        the leases and exports; a lease with nothing here is released by
        the next attach or detach of that disk.)
        """
        ids = set()
        for row in self.compute_zfs.list(self.compute_root):
            ids.add(validation.volume_id_in(
                row['name'].rsplit('/', 1)[-1], 'volume-', ('-cow',)))
        for dev in self.dm.devices('zvault-'):
            ids.add(validation.volume_id_in(dev['name'], 'zvault-',
                                            ('-snap', '-merge')))
        ids.discard(None)
        return sorted(ids)

    def reconcile(self, volume_id):
        """Bring one volume's devices to a state a flow can go on from.

        What is wrong after a crash with no flow to finish it: a suspended
        device (I/O held), a cut-over stopped half way, a COW zvol with no
        device (a reboot), leftover devices, a session or export, a lease
        with nothing out. Zvols are never destroyed here, except the COW
        zvol of a finished merge (what :meth:`cutover` does).
        :returns: (what was done, the flow still needed: 'seed', 'sync'
            or None).
        """
        n = self.names(volume_id)
        mapping = self.mapping(volume_id)
        if mapping == 'vault':
            if self.dm.suspended(n.dm):
                self.dm.resume(n.dm)
            return 'non-sync device left as it is', None
        if mapping == 'snapshot':
            for name in (n.dm_snap, n.dm):
                if self.dm.suspended(name):
                    self.dm.resume(name)
            self.dm.remove(n.dm_merge)
            return 'device resumed on the origin', 'seed'
        if mapping is not None:
            if self.dm.suspended(n.dm):
                self.dm.resume(n.dm)
            self.cutover(volume_id)  # finishes a merge, or tidies after one
            return 'cut-over finished', None
        for name in (n.dm_merge, n.dm_snap):
            self.dm.remove(name)
        if self.compute_zfs.exists(n.cow):
            self.attach(volume_id)
            return 'device mapped again over its COW zvol', 'seed'
        if self.compute_zfs.exists(n.local):
            return 'warm replica kept', 'sync'
        self._disconnect_origin(n)
        self._release_if_ours(n)
        return 'nothing out: origin and lease released', None

    def state(self, volume_id):
        """The disk's :class:`~cinder_zfs_vault.status.State` on this host.

        IN_VAULT, SEEDING, LOCAL, DIRECT or RELEASING (each compares equal
        to its word: 'in vault', 'seeding', ...).

        'direct' is a disk attached in non-sync mode (writes go straight
        to the vault).
        """
        n = self.names(volume_id)
        mapping = self.mapping(volume_id)
        if mapping:
            return {'local': State.LOCAL,
                    'vault': State.DIRECT}.get(mapping, State.SEEDING)
        if self.compute_zfs.exists(n.local):
            return State.RELEASING
        return State.IN_VAULT
