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

"""What the ``zfs-vault`` commands share to take their arguments.

The positional VOLUME (:class:`VolumeCommand`), the disk it names in the
vault (:func:`find_disk`), the refusal of a disk leased to another host
(:func:`refuse_if_leased_elsewhere`), and the attribute options and names of
``set``, ``unset``, ``vault set`` and ``vault unset``.
"""

from cliff import command

from cinder_zfs_vault import exception
from cinder_zfs_vault import lease as leaselib
from cinder_zfs_vault import validation


class VolumeCommand(command.Command):
    """Base: a command on one volume (positional VOLUME, a UUID)."""

    def get_parser(self, prog_name):
        parser = super(VolumeCommand, self).get_parser(prog_name)
        parser.add_argument('volume', metavar='VOLUME',
                            help='volume id (UUID)')
        return parser

    def run(self, parsed_args):
        """Validate VOLUME before the command builds anything.

        A hostile id is refused before the engine is made (os-brick reads
        the initiator, runs ldconfig and iscsiadm) or a logbook opened.
        :raises InvalidInput: not a UUID.
        """
        parsed_args.volume = validation.volume_id(parsed_args.volume)
        return super(VolumeCommand, self).run(parsed_args)


class VolumeHostCommand(VolumeCommand):
    """Base: a vault operator's word on one volume and one host.

    Positional VOLUME (a UUID) and HOST (a host name), both checked
    before anything runs; :meth:`act` says what the vault does and
    returns the line printed.
    """

    #: Help of the HOST argument.
    host_help = 'a compute host, as its endpoint key names it (--host)'

    def get_parser(self, prog_name):
        parser = super(VolumeHostCommand, self).get_parser(prog_name)
        parser.add_argument('host', metavar='HOST', help=self.host_help)
        return parser

    def take_action(self, parsed_args):
        host = leaselib.validate_host(parsed_args.host)
        vid, _disk = find_disk(self.app.vault, parsed_args.volume)
        self.app.stdout.write(self.act(vid, host) + '\n')

    def act(self, volume_id, host):
        raise NotImplementedError()


def find_disk(vault, volume_id):
    """Validate ``volume_id`` and read its disk; a clear NotFound if none.

    :returns: (normalised volume id, disk dict of Authority.disks).
    :raises InvalidInput: not a UUID (nothing ran).
    :raises NotFound: no such zvol in the vault.
    """
    volume_id = validation.volume_id(volume_id)
    try:
        disks = vault.disks(volume_id)
    except exception.NotFound:
        disks = {}
    if volume_id not in disks:
        raise exception.NotFound('volume %s is not in the vault (%s)'
                                 % (volume_id, vault.vault_root))
    return volume_id, disks[volume_id]


def refuse_if_leased_elsewhere(engine, volume_id, disk):
    """Raise LeaseHeld if another host than ``engine``'s holds the disk."""
    owner = disk['lease'].owner
    if owner not in (None, engine.host):
        raise leaselib.LeaseHeld(
            'volume %s is leased to %s (generation %d); `zfs-vault unlock '
            '-f` breaks the lease' % (volume_id, owner,
                                      disk['lease'].generation))


def add_attribute_options(parser, names):
    """``--frequency``, ``--upload-rate``... for the attributes ``names``."""
    helps = {
        'frequency': 'seconds between sync points, or with a unit: 90s, '
                     '5m, 1h, 1d (60 s to 7 days)',
        'next_sync': 'when the next sync point is due: epoch seconds, an '
                     'ISO 8601 time (UTC) or "now"',
        'upload_rate': 'sync speed limit to the vault, bytes/second: '
                       '1048576, 10M, 1.5GiB; 0 is unlimited',
        'download_rate': 'seed speed limit from the vault, as --upload-rate',
        'sync_mode': 'sync (a local replica, synced back) or nosync '
                     '(plain read-write iSCSI to the vault), from the next '
                     'attach: a replica out now is synced until detach',
        'sync_workers': 'transfers (seeds and syncs) at once from this '
                        'vault, 1 to 64',
    }
    for name in names:
        parser.add_argument('--' + name.replace('_', '-'), dest=name,
                            metavar=name.upper(), help=helps[name])


def add_attribute_names(parser, names):
    """The positional ATTR... of ``unset``: one or more of ``names``."""
    parser.add_argument('names', metavar='ATTR', nargs='+',
                        help='one of %s' % ', '.join(names))


def given_attributes(parsed_args, names):
    """The attribute options given on the command line (raw strings)."""
    given = {n: getattr(parsed_args, n) for n in names
             if getattr(parsed_args, n) is not None}
    if not given:
        raise exception.InvalidInput(
            'nothing to set: give one of %s'
            % ', '.join('--' + n.replace('_', '-') for n in names))
    return given
