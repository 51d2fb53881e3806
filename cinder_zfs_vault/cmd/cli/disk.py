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

"""``zfs-vault list``, ``show``, ``set`` and ``unset``: the disks.

The status of each disk is the core's (:mod:`cinder_zfs_vault.status`);
these commands read it and print it as columns (:data:`LIST_COLUMNS`), with
the disk's attributes for ``show``, and set or unset those attributes.
"""

import time

from cliff import lister
from cliff import show

from cinder_zfs_vault import attributes as attrs
from cinder_zfs_vault.cmd.cli import common
from cinder_zfs_vault.cmd.cli import format as cli_format
from cinder_zfs_vault import protocol
from cinder_zfs_vault import status

LIST_COLUMNS = ('Volume', 'State', 'Lease owner', 'Generation', 'Last sync',
                'Synced GUID', 'Lag (s)', 'Unsynced bytes', 'Problem')


def problem_text(problem):
    """The agent's problem with a disk in one line, or None.

    ``3 failures, next try 2026-11-30T10:00:00Z: <last error>``; the error
    text comes from commands and the vault, so it is made printable.
    """
    if not problem:
        return None
    if 'failures' not in problem:
        return cli_format.printable(problem['error'])
    return '%d failure%s, next try %s: %s' % (
        problem['failures'], '' if problem['failures'] == 1 else 's',
        cli_format.timestamp(problem['retry_at']) or 'never (fenced: '
        'zfs-vault discard or allow)',
        cli_format.printable(problem['error']))


def status_row(disk_status):
    """A :data:`~cinder_zfs_vault.status.DiskStatus` as ``list`` prints it.

    :returns: dict of column name (:data:`LIST_COLUMNS`) to value; the
        lease owner and synced GUID are ZFS properties anyone may have set
        by hand, so they are shown :func:`~.format.printable`.
    """
    return {'Volume': disk_status.volume_id,
            'State': disk_status.state.value,
            'Lease owner': cli_format.printable(disk_status.lease_owner),
            'Generation': disk_status.generation,
            'Last sync': cli_format.timestamp(disk_status.last_sync),
            'Synced GUID': cli_format.printable(disk_status.synced_guid),
            'Lag (s)': disk_status.lag,
            'Unsynced bytes': disk_status.unsynced_bytes,
            'Problem': problem_text(disk_status.problem)}


class ListDisk(lister.Lister):
    """List the disks in the vault with their state on this host.

    State: 'in vault', 'seeding' (the device runs on the iSCSI origin while
    the local copy fills), 'local' (on the local replica), 'direct'
    (non-sync mode: read-write on the vault over iSCSI), 'releasing' (a
    replica here without a device: a detach under way), 'syncing' (a sync
    flow of this host in flight), 'remote' (leased to another host),
    'unknown' (what this host has of it could not be read in three looks
    while a flow moved it: Problem says why; the other rows are listed). Last
    sync is the newest sync point in the vault; lag is seconds since then,
    for leased disks; unsynced bytes are written on this host's replica
    since that sync point. Problem is what the running agent failed to do
    with a disk of this host (a seed it picked up), and when it tries
    again. When the vault cannot be reached, the disks of this host are
    listed from what it knows: the last sync point the vault confirmed,
    the lag since and the bytes written since.
    """

    def take_action(self, parsed_args):
        engine = self.app.engine
        in_flight = self.app.orchestrator.in_flight
        try:
            disks = self.app.vault.disks()
        except protocol.EndpointError as e:
            # A cut network: what this host knows is what matters now
            # (its replicas' lag and unsynced bytes grow), not an error.
            reason = 'vault unreachable: %s' % e
            self.app.stderr.write(cli_format.printable(reason) + '\n')
            statuses = status.local_statuses(engine, in_flight, reason,
                                             problems=self.app.problems())
        else:
            statuses = status.disk_statuses(engine, disks, in_flight,
                                            problems=self.app.problems())
        rows = []
        for disk_status in statuses:
            row = status_row(disk_status)
            rows.append([row[c] for c in LIST_COLUMNS])
        return LIST_COLUMNS, rows


class ShowDisk(common.VolumeCommand, show.ShowOne):
    """Show one disk: zvol, size, state, lease, sync lag and attributes.

    The attributes are the effective ones; 'Set here' names those set on
    the volume itself (the others come from the vault, see vault show).
    """

    def take_action(self, parsed_args):
        engine = self.app.engine
        vid, disk = common.find_disk(self.app.vault, parsed_args.volume)
        disk_status = status.disk_status(
            engine, vid, disk, True, time.time(),
            status.flows_by_volume(self.app.orchestrator.in_flight()).get(
                vid), self.app.problems().get(vid))
        row = status_row(disk_status)
        row.update({'Dataset': disk_status.dataset,
                    'Size': disk_status.size})
        if disk_status.device is not None:
            row['Device'] = disk_status.device
        columns = ('Volume', 'Dataset', 'Size') + LIST_COLUMNS[1:]
        columns += ('Device',) if 'Device' in row else ()
        attributes = self.app.attributes
        more, values = cli_format.attribute_values(
            attributes.volume(disk['dataset']),
            attributes.explicit(disk['dataset']))
        return columns + more, [row[c] for c in columns] + values


class SetDisk(common.VolumeCommand):
    """Set attributes of a disk: sync schedule, speed limits, sync mode.

    Every value is checked before anything changes; the values are ZFS
    user properties on the disk's zvol, so they travel with it.
    """

    def get_parser(self, prog_name):
        parser = super(SetDisk, self).get_parser(prog_name)
        common.add_attribute_options(parser, attrs.VOLUME_ATTRIBUTES)
        return parser

    def take_action(self, parsed_args):
        values = attrs.parse_volume(
            **common.given_attributes(parsed_args, attrs.VOLUME_ATTRIBUTES))
        vid, disk = common.find_disk(self.app.vault, parsed_args.volume)
        self.app.attributes.set_volume(disk['dataset'], **values)


class UnsetDisk(common.VolumeCommand):
    """Unset attributes of a disk: it takes the vault's values again."""

    def get_parser(self, prog_name):
        parser = super(UnsetDisk, self).get_parser(prog_name)
        common.add_attribute_names(parser, attrs.VOLUME_ATTRIBUTES)
        return parser

    def take_action(self, parsed_args):
        names = attrs.attribute_names('volume', attrs.VOLUME_ATTRIBUTES,
                                      parsed_args.names)
        vid, disk = common.find_disk(self.app.vault, parsed_args.volume)
        self.app.attributes.unset_volume(disk['dataset'], *names)
