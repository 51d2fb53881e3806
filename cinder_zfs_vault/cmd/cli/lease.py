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

"""``zfs-vault lock``, ``unlock``, ``allow``, ``grant`` and ``revoke``:
the lease of a disk.

Take a disk's lease for a host, release it or break it (fencing its
holder), let a fenced host lease the disk again, and grant a host the
disk (or take the grant back): the vault leases a disk only to a host
that Cinder attached it to, or that an operator granted it to.
"""

import time

from cinder_zfs_vault.cmd.cli import common
from cinder_zfs_vault.cmd.cli import format as cli_format
from cinder_zfs_vault import exception
from cinder_zfs_vault import lease as leaselib
from cinder_zfs_vault import status


class LockLease(common.VolumeCommand):
    """Take the lease of a disk for a host (this host by default).

    Taking it again for the same host keeps its generation; a lease held
    by another host is refused. Prints the lease taken.
    """

    def get_parser(self, prog_name):
        parser = super(LockLease, self).get_parser(prog_name)
        parser.add_argument('--host', help='lease owner (default: this '
                                           'host, [zfs_vault_agent] host)')
        return parser

    def take_action(self, parsed_args):
        # An empty --host is refused, not read as "this host".
        host = leaselib.validate_host(
            self.app.engine.host if parsed_args.host is None
            else parsed_args.host)
        vid, disk = common.find_disk(self.app.vault, parsed_args.volume)
        lease = self.app.vault.leases.acquire(disk['dataset'], host)
        self.app.stdout.write('volume %s leased to %s, generation %d\n'
                              % (vid, lease.owner, lease.generation))


class UnlockLease(common.VolumeCommand):
    """Release this host's lease of a disk, or break any lease (-f).

    A plain unlock releases only a lease this host holds, and only when no
    replica of the disk is here (detach syncs it back and releases it). -f
    breaks the lease whoever holds it: the generation is bumped first, so a
    late sync from the old owner is refused (fencing). The vault keeps the
    disk as of its newest sync point; the loss window printed is the time
    since then.
    """

    # A plain Command, not a ShowOne: there -f is cliff's output format.

    def get_parser(self, prog_name):
        parser = super(UnlockLease, self).get_parser(prog_name)
        parser.add_argument('-f', '--force', action='store_true',
                            help='break the lease, whoever holds it, and '
                                 'fence the holder')
        return parser

    def take_action(self, parsed_args):
        engine = self.app.engine
        vid, disk = common.find_disk(self.app.vault, parsed_args.volume)
        lease = disk['lease']
        if lease.owner is None:
            self.app.stdout.write('volume %s is not leased (generation %d)'
                                  ': nothing changed\n'
                                  % (vid, lease.generation))
        elif parsed_args.force:
            self._break(vid, disk)
        else:
            common.refuse_if_leased_elsewhere(engine, vid, disk)
            state = engine.state(vid)
            if state != status.State.IN_VAULT:
                raise exception.InvalidInput(
                    'volume %s has a replica on this host (%s): `zfs-vault '
                    'detach` syncs it back and releases the lease'
                    % (vid, state))
            self.app.vault.leases.release(disk['dataset'], lease.owner,
                                          lease.generation)
            self.app.stdout.write(
                'volume %s released by %s (generation %d)\n'
                % (vid, cli_format.printable(lease.owner), lease.generation))

    def _break(self, vid, disk):
        # On the vault: fenced, its sync in flight undone, its export and
        # session revoked, under the lease's lock.
        broken = self.app.vault.break_lease(vid)
        # The owner was read from the zvol: whatever `zfs set` put there.
        owner = cli_format.printable(broken.owner)
        out = self.app.stdout
        out.write('volume %s: lease of %s broken, generation %d -> %d '
                  '(%s is fenced)\n' % (vid, owner, broken.generation,
                                        broken.generation + 1, owner))
        if disk['last_sync'] is None:
            out.write('loss window: no sync point in the vault; the writes '
                      '%s made since it took the lease are lost\n' % owner)
        else:
            window = max(0, int(time.time() - disk['last_sync']))
            out.write('loss window: %d s (the vault holds the disk as of %s)'
                      '\n' % (window, cli_format.timestamp(disk['last_sync'])))


class AllowLease(common.VolumeHostCommand):
    """Let a fenced host take a disk again (on the vault host).

    After ``unlock -f`` the old owner may not lease the disk until an
    operator says so; its stale replica stays refused all the same (it
    must be discarded on that host: ``zfs-vault discard``).
    """

    host_help = 'the fenced host to allow back'

    def act(self, volume_id, host):
        self.app.vault.allow(volume_id, host)
        return 'volume %s: %s may lease it again' % (volume_id, host)


class GrantLease(common.VolumeHostCommand):
    """Let a host take a disk's lease (on the vault host).

    The vault endpoint leases a disk only to a host Cinder attaches it to
    (cinder-volume grants it) or to one an operator grants it to here, for
    a ``zfs-vault attach`` of their own on that host. Idempotent.
    """

    def act(self, volume_id, host):
        granted = self.app.vault.grant(volume_id, host)
        return 'volume %s granted to %s' % (volume_id, ', '.join(granted))


class RevokeLease(common.VolumeHostCommand):
    """Take back a host's grant of a disk (on the vault host).

    Refused while that host holds the lease (its writes are there):
    detach it there, or break the lease (``unlock -f``) first.
    """

    host_help = 'the host whose grant goes'

    def act(self, volume_id, host):
        rest = self.app.vault.revoke(volume_id, host)
        return ('volume %s: %s may no longer lease it (granted: %s)'
                % (volume_id, host, ', '.join(rest) or 'none'))
