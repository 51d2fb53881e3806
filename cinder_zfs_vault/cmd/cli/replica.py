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

"""``zfs-vault attach``, ``detach``, ``sync``, ``discard`` and ``mapped``.

This host's replicas of disks: attach one (then seed and cut over to the
local copy), sync it back to the vault, detach it (final sync, then the
replica goes), drop a fenced one, and list their device-mapper devices.
"""

from cliff import lister
from cliff import show

from cinder_zfs_vault.cmd.cli import common
from cinder_zfs_vault.cmd.cli import format as cli_format
from cinder_zfs_vault import exception
from cinder_zfs_vault import status
from cinder_zfs_vault import validation


def sync_columns(vid, state, result):
    """Columns and values of a sync (a ``SyncResult``, or None)."""
    columns = ('Volume', 'State', 'Sync point', 'GUID', 'Bytes', 'Seconds')
    if result is None:
        return columns, (vid, state, None, None, 0, 0.0)
    return columns, (vid, state, result.snapshot, result.guid, result.bytes,
                     round(result.seconds, 3))


class AttachReplica(common.VolumeCommand, show.ShowOne):
    """Attach a disk on this host, then seed and cut over to a local copy.

    The device (/dev/mapper/zvault-<id>) is usable as soon as the attach
    step returns; the seed then copies the disk behind it (a progress bar on
    a terminal) and cuts over to the local copy, and the I/O pauses of the
    cut-over are printed. --no-seed stops after the attach. A warm replica
    still here is mapped again without a seed; a disk in non-sync mode is
    mapped read-write from the vault (state 'direct').
    """

    def get_parser(self, prog_name):
        parser = super(AttachReplica, self).get_parser(prog_name)
        parser.add_argument('--no-seed', action='store_true',
                            help='only attach: the device runs on the '
                                 'vault\'s iSCSI origin until a seed')
        return parser

    def take_action(self, parsed_args):
        engine = self.app.engine
        vid, disk = common.find_disk(self.app.vault, parsed_args.volume)
        common.refuse_if_leased_elsewhere(engine, vid, disk)
        orchestrator = self.app.orchestrator
        device = orchestrator.attach(vid)
        state = engine.state(vid)
        pauses = None
        # Only a device on the origin has a seed to run: not a warm
        # re-attach ('local') nor a disk in non-sync mode ('direct').
        if state == status.State.SEEDING and not parsed_args.no_seed:
            pauses = cli_format.with_progress(self.app, 'seed',
                                              orchestrator.seed, vid)
            pauses = [round(p, 3) for p in pauses or ()]
            state = engine.state(vid)
        return ('Volume', 'Device', 'State', 'Cut-over pauses (s)'), (
            vid, device, state, pauses)


class DetachReplica(common.VolumeCommand, show.ShowOne):
    """Return a disk to the vault: final sync, then the replica goes.

    The device must be unused. The replica is destroyed and the lease
    released only after the vault confirmed the final sync point.
    """

    def take_action(self, parsed_args):
        engine = self.app.engine
        vid, disk = common.find_disk(self.app.vault, parsed_args.volume)
        common.refuse_if_leased_elsewhere(engine, vid, disk)
        result = cli_format.with_progress(self.app, 'final sync',
                                          self.app.orchestrator.detach, vid)
        return sync_columns(vid, engine.state(vid), result)


class SyncReplica(common.VolumeCommand, show.ShowOne):
    """Sync a disk's local replica back to the vault now."""

    def take_action(self, parsed_args):
        engine = self.app.engine
        vid, disk = common.find_disk(self.app.vault, parsed_args.volume)
        common.refuse_if_leased_elsewhere(engine, vid, disk)
        if disk['lease'].owner is None:
            raise exception.InvalidInput('volume %s is in the vault: '
                                         'nothing to sync' % vid)
        result = cli_format.with_progress(self.app, 'sync',
                                          self.app.orchestrator.sync, vid)
        return sync_columns(vid, engine.state(vid), result)


class DiscardReplica(common.VolumeCommand):
    """Drop this host's fenced replica of a disk (on a compute host).

    Only once the vault broke this host's lease: the vault holds the disk
    as of its last sync point, and these writes will never be taken.
    Refused while this host still holds the lease (detach instead).
    """

    def take_action(self, parsed_args):
        vid = validation.volume_id(parsed_args.volume)
        self.app.engine.discard_fenced(vid)
        self.app.stdout.write('volume %s: fenced replica discarded from %s'
                              '\n' % (vid, self.app.engine.host))


class ListReplica(lister.Lister):
    """List the devices of the disks on this host (/dev/mapper/zvault-*).

    Table is what the device maps: 'snapshot' (the vault's iSCSI origin
    with a local COW zvol), 'snapshot-merge' (the cut-over merging into the
    local copy) or 'linear' (the local replica, or in non-sync mode the
    vault's LUN). The VM's device is a linear map on top of the first two;
    Table names the device under it. State is the disk's (list).
    """

    def take_action(self, parsed_args):
        columns = ('Volume', 'Device', 'Table', 'State', 'Open', 'Size')
        engine = self.app.engine
        devices = engine.dm.devices(status.DM_PREFIX)
        by_devno = {d['devno']: d for d in devices if d['devno']}
        rows = []
        for dev in devices:
            vid = validation.volume_id_in(dev['name'], status.DM_PREFIX)
            if vid is None:
                continue  # a device stacked under a VM's device
            below = [by_devno[u] for u in dev['uses'] if u in by_devno]
            kind = below[0]['kind'] if below else dev['kind']
            rows.append((vid, engine.dm.path(dev['name']), kind,
                         engine.state(vid), dev['open'], dev['size']))
        return columns, rows
