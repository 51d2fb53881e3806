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

"""What the vault decides for the compute hosts, and enforces.

The vault is the one authority over its disks (DESIGN.md, "Where each part
runs"): a compute host asks, through the endpoint (endpoint.py), and the
vault checks who is asking (the host its SSH key names), which disk (a
volume id: the vault builds every dataset name itself) and under which
lease generation, then does the work on its own pool, LIO and locks:

=============  ==============================================================
request        what the vault checks, then does
=============  ==============================================================
lease          disk granted to the host (cinder-volume attaches it there, or
               an operator granted it), free (or the host's already), host
               not fenced: owner = host, generation + 1 (lease.py)
export         host holds the lease: a read-only origin (read-write in
               non-sync mode) for the host's own initiator, CHAP made here
unexport       host holds the lease, or there is no export
info           host holds (or held) the lease: size, attributes, sync points
seed           host holds the lease: a sync point to seed from (the newest
               one if nothing was written after it, else a new one), held
send           host holds the lease; the snapshot or resume token is of this
               disk: ``zfs send`` in a transfer slot
receive        host holds the lease: ``zfs recv -s`` in a transfer slot,
               landed only if the generation still matches (landing.py)
confirm        the vault holds the host's final snapshot, by GUID
release        host holds the lease: holds released, export removed, lease
               given up
=============  ==============================================================

The operator's side (the driver, ``zfs-vault`` on the vault host) breaks a
lease here too (:meth:`Authority.break_lease`): fenced under the lease's
lock, the fenced host's sync in flight undone, its export (and so its
iSCSI session) removed.
"""

import os
import re
import secrets
import subprocess

from oslo_log import log as logging

from cinder_zfs_vault import attributes as attrlib
from cinder_zfs_vault import exception
from cinder_zfs_vault import lease as leaselib
from cinder_zfs_vault import protocol
from cinder_zfs_vault import sync_points
from cinder_zfs_vault import transfer
from cinder_zfs_vault import validation
from cinder_zfs_vault.vault_host import landing as landinglib
from cinder_zfs_vault.vault_host import slots as slotlib
from cinder_zfs_vault import zfs as zfslib

LOG = logging.getLogger(__name__)

_TOKEN_TONAME_RE = re.compile(r'\s*toname = (\S+)')
#: ``zfs list`` columns of :meth:`Authority.disks`: the zvols' size and
#: lease, and the snapshots' creation time (sync points).
_LIST_PROPS = ('name', 'volsize', 'creation') + leaselib.PROPS


#: Seconds a receive whose stream failed has to end by itself (its input
#: is closed: ``zfs recv`` reports the incomplete stream) before it is
#: killed. Its own status says why a stream broke: a receive that ended
#: first (EPIPE on our side) tells how it ended.
RECEIVE_END_GRACE = 5
#: Seconds a lease change waits for the lease's lock (a transfer of the
#: disk in flight holds it).
LOCK_TIMEOUT = 60


def _end(child):
    """Let a receive whose stream failed end by itself, or kill it."""
    try:
        child.wait(timeout=RECEIVE_END_GRACE)
    except subprocess.TimeoutExpired:
        child.kill()


def _ending(rc):
    """How ``zfs recv`` ended, from its Popen return code."""
    if rc < 0:
        return 'zfs recv killed by signal %d' % -rc
    return 'zfs recv exited with status %d' % rc


class Authority(object):
    """The vault's decisions over its disks, for any asking host.

    :param zfs: the vault's :class:`~cinder_zfs_vault.zfs.ZFS`.
    :param exporter: :class:`~.origin.OriginExporter` of this vault host.
    :param vault_root: dataset holding the ``volume-<id>`` zvols.
    :param state_dir: the vault's state: lease locks (``locks/``), syncs
        in flight (``landing/``), transfer slots (``slots/``).
    :param keep: sync points kept on the vault as restore points.
    :param slot_timeout: seconds a transfer waits for a slot.
    :param host_slots: slots one host may hold at once; 0: one less than
        ``sync_workers`` (slots.py).
    """

    def __init__(self, zfs, exporter, vault_root, state_dir, keep=3,
                 slot_timeout=3600, lock_timeout=LOCK_TIMEOUT,
                 host_slots=0):
        self.zfs = zfs
        self.exporter = exporter
        self.vault_root = validation.dataset(vault_root)
        self.attributes = attrlib.Attributes(zfs, vault_root)
        self.leases = leaselib.Leases(
            zfs, lock_timeout=lock_timeout,
            lock_path=os.path.join(state_dir, 'locks'))
        self.landing = landinglib.Landing(
            zfs, self.leases, os.path.join(state_dir, 'landing'), keep=keep)
        self.slots = slotlib.Slots(
            os.path.join(state_dir, 'slots'),
            lambda: self.attributes.vault().sync_workers,
            timeout=slot_timeout, per_host=lambda: host_slots)

    def dataset(self, volume_id):
        return validation.volume_dataset(self.vault_root, volume_id)

    def _held(self, host, volume_id, generation):
        """The dataset, if ``host`` holds ``generation`` of its lease.

        :raises Fenced: the lease is not (or no longer) the host's.
        """
        dataset = self.dataset(volume_id)
        self.leases.check(dataset, leaselib.validate_host(host),
                          int(generation))
        return dataset

    # -- leases ---------------------------------------------------------------

    def lease(self, host, volume_id):
        """Take (or keep) the lease of a disk for ``host``.

        :returns: dict: ``generation``, ``taken`` (True if this call
            made the host the owner, False if it was already),
            ``volsize`` (bytes), the disk's effective attributes
            (attributes.py), ``synced_guid``.
        :raises LeaseHeld: another host has it. :raises Fenced: ``host``
            was fenced from it. :raises NotFound: no such disk.
        """
        dataset = self.dataset(volume_id)
        # Only this host can make itself the owner in between.
        before = self.leases.get(dataset).owner
        described = self._describe(dataset)
        held = self.leases.acquire(dataset, host, described['sync_mode'],
                                   granted_only=True)
        return dict(described,
                    generation=held.generation, taken=before != host,
                    synced_guid=held.synced_guid)

    def _describe(self, dataset):
        attrs = self.attributes.volume(dataset)
        size = self.zfs.get(dataset, ('volsize',))['volsize']
        return dict(attrs._asdict(), volsize=int(size))

    def grant(self, volume_id, host):
        """Let ``host`` take the disk's lease (Leases.grant).

        cinder-volume's driver grants a disk to the host Cinder attaches it
        to; an operator grants one on the vault for a ``zfs-vault attach``
        of their own. :returns: the hosts granted.
        """
        return self.leases.grant(self.dataset(volume_id), host)

    def revoke(self, volume_id, host, abandon=False):
        """Take ``host``'s grant back (Leases.revoke).

        :raises LeaseHeld: the host still holds the lease.
        """
        return self.leases.revoke(self.dataset(volume_id), host,
                                  abandon=abandon)

    def restore_exports(self):
        """At start: export again the origins a reboot took from LIO.

        The VMs of disks not yet cut over read them (their iSCSI sessions
        log in again by themselves). :returns: the IQNs restored
        (:meth:`~.origin.OriginExporter.restore`).
        """
        return self.exporter.restore()

    def release(self, host, volume_id, generation):
        """Give the lease back: holds released, export removed.

        Idempotent. :raises Fenced: broken meanwhile.
        """
        dataset = self.dataset(volume_id)
        lease = self.leases.get(dataset)
        if lease.owner is None and lease.generation == int(generation):
            return
        self._held(host, volume_id, generation)
        self._release_holds(dataset)
        self.exporter.unexport(self._name(volume_id))
        self.leases.release(dataset, host, int(generation))

    def break_lease(self, volume_id):
        """Fence the owner of a disk (an operator's ``unlock -f``).

        Under the lease's lock: generation + 1, owner cleared and recorded
        as fenced, its sync in flight stopped and undone, its export (and
        so its iSCSI session, read-write in non-sync mode) removed, the
        holds of its sync points released.
        :returns: the broken :data:`~cinder_zfs_vault.lease.Lease`.
        """
        name = self._name(volume_id)

        def revoke(dataset, lease):
            self.landing.revoke(dataset)
            self.exporter.unexport(name)
            self._release_holds(dataset)

        return self.leases.break_lease(self.dataset(volume_id), revoke)

    def allow(self, volume_id, host):
        """An operator lets a fenced host take the disk again."""
        self.leases.allow(self.dataset(volume_id), host)

    def _release_holds(self, dataset):
        for snap in self.zfs.snapshots(dataset):
            if snap['userrefs']:
                self.zfs.release(snap['name'], sync_points.HOLD_TAG)

    # -- exports --------------------------------------------------------------

    @staticmethod
    def _name(volume_id):
        return 'volume-' + validation.volume_id(volume_id)

    def export(self, host, initiator, volume_id, generation):
        """Export the disk to ``initiator`` (the asking host's own).

        Read-only, the origin of a lazy replica; read-write for a disk in
        non-sync mode, which the host then writes directly.
        :returns: os-brick iSCSI connection properties, with CHAP.
        """
        validation.initiator(initiator)
        dataset = self._held(host, volume_id, generation)
        readonly = self.attributes.volume(dataset).sync_mode != 'nosync'
        export = self.exporter.export(
            self._name(volume_id), '/dev/zvol/' + dataset, initiator,
            'zv' + secrets.token_hex(6), secrets.token_urlsafe(12),
            readonly=readonly)
        return export.properties

    def unexport(self, host, volume_id, generation):
        """Remove the disk's export; nothing to remove is no error."""
        name = self._name(volume_id)
        if not self.exporter.exported(name):
            return
        self._held(host, volume_id, generation)
        self.exporter.unexport(name)

    # -- what a host may know -------------------------------------------------

    def info(self, host, volume_id):
        """A disk as the host that holds it sees it.

        :returns: dict: ``lease`` (owner, generation, synced_guid), size
            and attributes (as :meth:`lease`), ``snapshots`` (every
            snapshot: snap, guid, createtxg, oldest first, for a sync's
            plan), ``resume_token`` (of a cut sync, or None).
        :raises protocol.NotYours: the disk is leased to another host, or free.
        """
        dataset = self.dataset(volume_id)
        # Three commands, not six: each costs a fork of zfs on the vault
        # for every sync of every host.
        props = self.zfs.get(dataset, leaselib.PROPS + (
            'volsize', 'receive_resume_token'))
        lease = leaselib.parse(props)
        if lease.owner != host and host not in lease.fenced:
            raise protocol.NotYours('%s is not leased to %s' % (dataset, host))
        return dict(
            self.attributes.volume(dataset)._asdict(),
            volsize=int(props['volsize']),
            lease={'owner': lease.owner, 'generation': lease.generation,
                   'synced_guid': lease.synced_guid},
            snapshots=[{'snap': s['snap'], 'guid': s['guid'],
                        'createtxg': s['createtxg']}
                       for s in self.zfs.snapshots(dataset)],
            resume_token=transfer.token(props['receive_resume_token']))

    def schedule(self, host):
        """The sync schedule of the disks ``host`` holds, in one ``zfs get``.

        :returns: dict: ``vault`` (the vault's attributes) and ``volumes``
            ({volume id: effective attributes}) of the disks leased to
            ``host``.
        """
        local = self.zfs.get_local(
            [self.vault_root],
            sorted(attrlib.PROPERTIES.values()) + [leaselib.OWNER], depth=1)
        vault, volumes = self.attributes.decode_all(local)
        mine = {}
        for dataset, attrs in volumes.items():
            volume_id = validation.volume_id_in(
                dataset.rsplit('/', 1)[-1], 'volume-')
            if volume_id and local[dataset].get(leaselib.OWNER) == host:
                mine[volume_id] = attrs._asdict()
        return {'vault': vault._asdict(), 'volumes': mine}

    def disks(self, volume_id=None, host=None):
        """Every disk in the vault (or one), from a single ``zfs list``.

        :param host: only the disks leased to this host.
        :returns: dict volume id -> dict with ``dataset``, ``size``
            (bytes), ``lease`` (:data:`~cinder_zfs_vault.lease.Lease`) and
            ``last_sync`` (epoch seconds of the newest sync point's
            ``creation``, None without one). The creation time of a
            received snapshot is the time it was taken on the compute host,
            so it says how old the vault's copy is.
        :raises NotFound: the vault dataset (or that volume) does not exist.
        """
        if volume_id is None:
            root, depth = self.vault_root, 2
        else:
            root, depth = self.dataset(volume_id), 1
        rows = self.zfs.list(root, props=_LIST_PROPS,
                             types=('volume', 'snapshot'), depth=depth,
                             sort='createtxg')
        disks, last_sync = {}, {}
        for row in rows:
            dataset, _, snap = row['name'].partition('@')
            parent, _, name = dataset.rpartition('/')
            vid = validation.volume_id_in(name, 'volume-')
            if parent != self.vault_root or vid is None:
                continue
            if not snap:
                lease = leaselib.parse(row)
                if host is None or lease.owner == host:
                    disks[vid] = {'dataset': dataset,
                                  'size': int(row['volsize']),
                                  'lease': lease, 'last_sync': None}
            elif sync_points.is_sync_point(snap):
                last_sync[vid] = int(row['creation'])  # sorted: newest last
        for vid, created in last_sync.items():
            if vid in disks:
                disks[vid]['last_sync'] = created
        return disks

    def set_next_sync(self, host, volume_id, epoch):
        """Record when the host's next sync of a disk it holds is due."""
        dataset = self.dataset(volume_id)
        if self.leases.get(dataset).owner != host:
            raise protocol.NotYours('%s is not leased to %s'
                                    % (dataset, host))
        self.attributes.set_volume(dataset, next_sync=epoch)

    # -- transfers ------------------------------------------------------------

    def seed(self, host, volume_id, generation):
        """The sync point a host seeds its replica from, held.

        The newest sync point is reused only if the zvol was not written
        after it (``written`` is 0 and no other snapshot is newer):
        otherwise the VM would see old blocks beside new ones. (After a
        reboot ``written`` counts the import's rewrite of the objset block
        too, and a new sync point is taken: a cost of nothing.) Its GUID
        becomes the lease's synced GUID, the base every later sync builds
        on.
        :returns: dict: ``snap``, ``guid``, ``bytes`` (the stream's
            estimated size).
        """
        dataset = self._held(host, volume_id, generation)
        with self.leases.lock(dataset):
            self.leases.check(dataset, host, int(generation))
            snaps = self.zfs.snapshots(dataset)
            written = int(self.zfs.get(dataset, ('written',))['written'])
            if snaps and sync_points.is_sync_point(snaps[-1]['snap']) and \
                    not written:
                snap = snaps[-1]
            else:
                name = '%s@%s' % (dataset, sync_points.next_name(snaps))
                self.zfs.snapshot(name)
                snap = self.zfs.snapshots(dataset)[-1]
            self.zfs.hold(snap['name'], sync_points.HOLD_TAG)
            self.leases.record_sync(dataset, snap['guid'])
        return {'snap': snap['snap'], 'guid': snap['guid'],
                'bytes': transfer.estimate(self.zfs, snap['name'])}

    def send_argv(self, host, volume_id, generation, snap=None, token=None):
        """``zfs send`` argv of a seed stream the host may have.

        :param snap: a sync point of this disk (after '@').
        :param token: a resume token; it must name a snapshot of this
            disk (read with ``zfs send -nvP -t``), never another's.
        """
        dataset = self._held(host, volume_id, generation)
        if token:
            argv = transfer.send_argv(token=validation.resume_token(token))
            toname = self._token_target(argv)
            if toname.split('@')[0] != dataset:
                raise protocol.NotYours('resume token of %s, not of %s'
                                        % (toname, dataset))
            return argv
        if not sync_points.is_sync_point(validation.snapshot_name(snap)):
            raise exception.InvalidInput('%r is not a sync point' % snap)
        return transfer.send_argv('%s@%s' % (dataset, snap))

    def _token_target(self, argv):
        out = self.zfs.dry_run(argv[1:2] + ['-nvP'] + argv[2:])
        for line in out.splitlines():
            match = _TOKEN_TONAME_RE.fullmatch(line)
            if match:
                return validation.snapshot(match.group(1))
        raise exception.InvalidInput('resume token names no snapshot')

    def receive(self, host, volume_id, generation, start, feed,
                expect_guid=None):
        """Receive a sync into the disk and land it, fenced (landing.py).

        :param start: callable(argv) -> a started Popen of the ``zfs
            recv`` argv, its standard input a pipe.
        :param feed: callable(popen) that streams the host's bytes into
            it (transfer.relay) and closes its input.
        :param expect_guid: GUID of the sender's newest snapshot.
        :returns: the landed sync point row.
        :raises CommandFailed: the stream failed (its partial state is
            kept: the next sync resumes it). :raises Fenced, Diverged.
        """
        dataset = self.dataset(volume_id)
        if expect_guid in ('-', ''):
            expect_guid = None
        if expect_guid is not None:
            expect_guid = validation.guid(expect_guid)
        child = self.landing.begin(
            dataset, host, int(generation),
            lambda: start(transfer.recv_argv(dataset)))
        failure = None
        try:
            feed(child)
        except Exception as e:  # a stalled or cut stream, or a gone receiver
            failure = e
            _end(child)
        err = child.stderr.read().decode(errors='replace').strip() \
            if child.stderr else ''
        rc = child.wait()
        landed = self.landing.land(dataset, host, int(generation),
                                   rc == 0 and failure is None, expect_guid)
        if landed is None:
            raise zfslib.error_class(err, exception.CommandFailed)(
                '%s: receive failed: %s %s (%s)' % (
                    dataset, failure or '', err, _ending(rc)))
        return landed

    def confirm(self, host, volume_id, generation, snap, guid):
        """Whether the vault holds ``snap`` with ``guid`` as the synced one.

        :raises Diverged: it does not (the host must keep its replica).
        """
        guid = validation.guid(guid)
        dataset = self._held(host, volume_id, generation)
        lease = self.leases.get(dataset)
        try:
            vault_guid = self.zfs.get('%s@%s' % (
                dataset, validation.snapshot_name(snap)), ('guid',))['guid']
        except exception.NotFound:
            vault_guid = None
        if vault_guid != guid or lease.synced_guid != guid:
            raise exception.Diverged(
                '%s@%s: the vault has GUID %s (synced %s), the host %s'
                % (dataset, snap, vault_guid, lease.synced_guid, guid))
        return True
