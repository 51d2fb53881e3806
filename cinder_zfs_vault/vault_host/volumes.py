"""Volume operations on the vault: the core that the Cinder driver adapts.

A volume is a zvol ``<root>/<name>`` (Cinder's ``volume.name``, i.e.
``volume-<name_id>``); a Cinder snapshot is ``<zvol>@<snapshot.name>``. No
Cinder object enters here: names, GiB and bytes only.

Semantics follow what Cinder expects of a driver (``cinder.interface``):
deleting what is already gone succeeds, a volume with dependent clones can be
deleted (the newest clone is promoted, as the Open-E JovianDSS and NexentaStor
drivers do), a snapshot with clones is destroyed deferred (``zfs destroy -d``),
and a failed multi-step operation removes what it had made.
"""

import collections
import math

from oslo_log import log as logging
from oslo_utils import excutils

from cinder_zfs_vault import attributes
from cinder_zfs_vault import exception
from cinder_zfs_vault import lease
from cinder_zfs_vault import sync_points
from cinder_zfs_vault import validation
from cinder_zfs_vault.validation import GiB

LOG = logging.getLogger(__name__)

#: Snapshots the vault makes for ``create_cloned_volume``: ``@clone-<dst>``.
#: They are ours, not the user's, and are destroyed with their last clone.
CLONE_SNAPSHOT_PREFIX = 'clone-'

#: User property of a sync point kept as a Cinder snapshot: its name as a
#: sync point, under which it goes back to the replica engine.
SYNC_POINT = lease.NS + 'sync-point'

#: Totals for the scheduler (see :meth:`Vault.stats`), all in bytes.
Stats = collections.namedtuple(
    'Stats', 'total free provisioned volumes')

#: A zvol that Cinder could manage (see :meth:`Vault.manageable`).
Manageable = collections.namedtuple('Manageable', 'name size origin')


def _ours(snap):
    """Whether a snapshot name is the vault's own, not a user's."""
    return (snap.startswith(CLONE_SNAPSHOT_PREFIX)
            or sync_points.is_sync_point(snap))


class Vault(object):
    """Volume operations on zvols under one root dataset.

    :param zfs: a :class:`cinder_zfs_vault.zfs.ZFS`.
    :param root: dataset holding the volumes, e.g. ``vault`` or
        ``tank/cinder``.
    :param sparse: create volumes without ``refreservation`` (thin).
    :param volblocksize: bytes, or None for the ZFS default.
    :param compression: a ``compression`` value, or None to inherit.
    """

    def __init__(self, zfs, root, sparse=True, volblocksize=None,
                 compression=None):
        self.zfs = zfs
        self.root = validation.dataset(root)
        self.sparse = bool(sparse)
        self.volblocksize = validation.volblocksize(volblocksize)
        self.compression = validation.compression(compression)

    # -- names --------------------------------------------------------------

    def path(self, name):
        """Dataset of the volume ``name``; validates the name."""
        validation.dataset(name)
        if '/' in name:
            raise exception.InvalidInput('invalid volume name %r: no "/" '
                                         'allowed' % name)
        return '%s/%s' % (self.root, name)

    def snapshot_path(self, name, snapshot):
        return '%s@%s' % (self.path(name), validation.snapshot_name(snapshot))

    def device_path(self, name):
        """Block device of the zvol on the vault host (udev link)."""
        return '/dev/zvol/%s' % self.path(name)

    # -- volumes ------------------------------------------------------------

    def _create_properties(self):
        props = {}
        if self.volblocksize:
            props['volblocksize'] = self.volblocksize
        if self.compression:
            props['compression'] = self.compression
        return props

    def create_volume(self, name, size_gib):
        """Create an empty zvol of ``size_gib`` GiB.

        Sparse unless the vault is configured thick.

        :raises InvalidInput: bad name or size (nothing ran).
        :raises AlreadyExists, OutOfSpace: from ``zfs create``.
        """
        path = self.path(name)
        size = validation.size_gib(size_gib) * GiB
        self.zfs.create_volume(path, size, sparse=self.sparse,
                               properties=self._create_properties())

    def volume_size(self, name):
        """``volsize`` of the volume in bytes. :raises NotFound."""
        return int(self.zfs.get(self.path(name), ('volsize',))['volsize'])

    def exists(self, name):
        return self.zfs.exists(self.path(name))

    def holder(self, name):
        """Who has the volume out, and how.

        :returns: ``(host or None, 'sync' or 'nosync')``: the lease owner
            and the sync mode that says how fresh the zvol is: the mode the
            disk was leased in (lease.MODE) while it is out, whatever the
            ``sync_mode`` attribute was set to since (an operator's ``zfs-
            vault set`` must not make a stale zvol look current); else the
            effective ``sync_mode`` attribute (attributes.py), the mode its
            next attach takes.
        :raises NotFound: no such volume.
        """
        held = self.lease(name)
        return held.owner, held.mode

    def lease(self, name):
        """The volume's :data:`~cinder_zfs_vault.lease.Lease`.

        Its ``mode`` is the sync mode the disk was leased in; for a disk
        not out (or leased before the mode was recorded), the effective
        ``sync_mode`` attribute.

        :raises NotFound: no such volume.
        """
        attr = attributes.PROPERTIES['sync_mode']
        props = self.zfs.get(self.path(name), lease.PROPS + (attr,))
        held = lease.parse(props)
        if held.owner is not None and held.mode in attributes.SYNC_MODES:
            return held
        mode = props.get(attr)
        return held._replace(mode=mode if mode in attributes.SYNC_MODES
                             else attributes.DEFAULT_SYNC_MODE)

    def check_unleased(self, name, what, replica_only=False):
        """Refuse ``what`` on a volume that is out on a compute host.

        A disk leased with a local replica (sync mode) holds writes the
        vault zvol has not seen yet: a snapshot or clone of the zvol would
        be stale, an extend or revert of it would be undone by the next
        sync, and a second export would add a second writer.
        :param replica_only: refuse only when the disk is in sync mode
            (in non-sync mode the VM writes the zvol itself, as with any
            attached volume, and a snapshot is as consistent as LVM's).
        :raises LeaseHeld: it is leased (nothing ran but ``zfs get``).
        """
        owner, mode = self.holder(name)
        if owner is None:
            return
        if replica_only and mode == 'nosync':
            return
        raise self.lease_held(name, owner, what)

    def lease_held(self, name, owner, what):
        """The LeaseHeld refusing ``what`` on a volume out on ``owner``."""
        return lease.LeaseHeld(
            '%s is attached to %s through a local replica: %s is refused '
            'until it is detached (its newest writes are on that host)'
            % (self.path(name), owner, what))

    def delete_volume(self, name):
        """Destroy the volume; succeed if it is already gone.

        Snapshots that other volumes were cloned from move to the newest such
        clone (``zfs promote``) first, so deleting never breaks a clone.
        Snapshots made only for cloning are destroyed with their last clone.

        :raises Busy: the zvol is open (exported or attached).
        """
        path = self.path(name)
        try:
            snaps = self.zfs.snapshots(path)
        except exception.NotFound:
            LOG.info('Volume %s is already gone.', path)
            return
        # A disk out on a compute host holds writes the vault has not seen:
        # it must come back (detach) or be fenced before it can go.
        owner = self.zfs.get(path, (lease.OWNER,)).get(lease.OWNER)
        if owner not in (None, '', '-'):
            raise exception.Busy('%s is leased to %s' % (path, owner))
        heir = self._newest_clone(snaps)
        if heir:
            LOG.info('Promoting %s so that %s can be deleted.', heir, path)
            self.zfs.promote(heir)
        origin = self.zfs.get(path, ('origin',))['origin']
        try:
            self.zfs.destroy(path, recursive=True)
        except exception.NotFound:
            return
        if heir:
            self._prune_clone_snapshots(heir)
        if origin not in ('', '-'):
            self._prune_clone_snapshots(origin.split('@')[0])

    def _newest_clone(self, snaps):
        """The clone of the newest snapshot that has clones, or None.

        Promoting it moves every snapshot with clones to it (``zfs
        promote`` takes all snapshots up to the clone's origin).
        """
        with_clones = [s for s in snaps if s['clones']]
        if not with_clones:
            return None
        clones = with_clones[-1]['clones']
        if len(clones) == 1:
            return clones[0]
        txg = {c: int(self.zfs.get(c, ('createtxg',))['createtxg'])
               for c in clones}
        return max(clones, key=txg.get)

    def _prune_clone_snapshots(self, dataset):
        """Destroy our clone snapshots of ``dataset`` that no clone uses."""
        try:
            snaps = self.zfs.snapshots(dataset)
        except exception.NotFound:
            return
        for snap in snaps:
            if (snap['snap'].startswith(CLONE_SNAPSHOT_PREFIX)
                    and not snap['clones']):
                # One held is a sync point kept for a clone of a disk that
                # was out (:meth:`keep_sync_point`): given back or released.
                self._drop_snapshot(snap['name'])

    def _destroy_quietly(self, name, **kwargs):
        """Destroy, treating 'already gone' as done (cleanup paths)."""
        try:
            self.zfs.destroy(name, **kwargs)
        except exception.NotFound:
            pass

    def _undo(self, name):
        """Destroy what a failed step made.

        A failure here is logged, so the caller re-raises the step's own
        error.
        """
        try:
            self._destroy_quietly(name)
        except exception.ZFSVaultError as e:
            LOG.error('Could not remove %s after a failed step: %s', name, e)

    def extend(self, name, size_gib):
        """Grow the volume to ``size_gib`` GiB. Shrinking is refused.

        :raises InvalidInput: not larger than now (nothing ran).
        :raises OutOfSpace: a thick volume the pool cannot reserve.
        """
        path = self.path(name)
        size = validation.size_gib(size_gib) * GiB
        current = self.volume_size(name)
        if size < current:
            raise exception.InvalidInput(
                'cannot shrink %s from %d to %d bytes' % (path, current, size))
        if size > current:
            self.zfs.set(path, {'volsize': size})

    # -- snapshots and clones ----------------------------------------------

    def create_snapshot(self, name, snapshot):
        """``zfs snapshot <volume>@<snapshot>``; an existing one is kept."""
        full = self.snapshot_path(name, snapshot)
        try:
            self.zfs.snapshot(full)
        except exception.AlreadyExists:
            LOG.info('Snapshot %s exists already.', full)

    def clone_sync_point(self, name, sync_point, guid, new_name, size_gib):
        """Volume ``new_name``, an O(1) clone of a leased volume's sync point.

        The sync point is kept as ``@clone-<new_name>`` (:meth:`keep_sync_
        point`: its GUID stays, the replica's next incremental builds on
        it). What :meth:`clone_volume` is for a volume out on a compute host
        with a local replica: its agent took the sync point now. On failure
        the sync point is given back (or released) and no clone remains.
        :raises NotFound: no such sync point with that GUID.
        """
        snapshot = CLONE_SNAPSHOT_PREFIX + new_name
        self.path(new_name)  # validate before anything runs
        validation.size_gib(size_gib)
        self.keep_sync_point(name, sync_point, guid, snapshot)
        try:
            return self.clone_snapshot(name, snapshot, new_name, size_gib)
        except Exception:
            with excutils.save_and_reraise_exception():
                self._drop_snapshot(self.snapshot_path(name, snapshot))

    def keep_sync_point(self, name, sync_point, guid, snapshot):
        """Keep a leased volume's sync point as the Cinder snapshot.

        ``zfs rename <zvol>@<sync_point> <zvol>@<snapshot>``: the GUID
        stays, so the replica's next incremental still builds on it (plan.py
        matches snapshots by GUID), and no snapshot the replica lacks lands
        after its base (which would make the next sync diverge). The sync
        point's name is kept in :data:`SYNC_POINT` for
        :meth:`delete_snapshot`. Idempotent.
        :param guid: the sync point's GUID, as the vault confirmed it.
        :raises NotFound: no sync point ``sync_point`` with that GUID (the
            vault pruned it, or it is another): nothing changed.
        """
        full = self.snapshot_path(name, snapshot)
        if not sync_points.is_sync_point(sync_point):
            raise exception.InvalidInput('%r is not a sync point'
                                         % sync_point)
        found = {s['snap']: s for s in self.zfs.snapshots(self.path(name))}
        if found.get(snapshot, {}).get('guid') == guid:
            return
        point = found.get(sync_point)
        if point is None or point['guid'] != guid:
            raise exception.NotFound('%s@%s with GUID %s is not on the vault'
                                     % (self.path(name), sync_point, guid))
        self.zfs.set(point['name'], {SYNC_POINT: sync_point})
        self.zfs.rename(point['name'], full)

    def delete_snapshot(self, name, snapshot):
        """Destroy a snapshot, deferred while clones use it (``-d``).

        A kept sync point (:meth:`keep_sync_point`) of a volume still out
        on its host that is the base of the replica's next incremental (the
        lease's synced GUID) goes back to the replica engine under its sync
        point name, which prunes it in turn; otherwise (the volume is back
        in the vault, or it is no base) its hold is released and it is
        destroyed. Succeeds if the snapshot or its volume is already gone.
        """
        self._drop_snapshot(self.snapshot_path(name, snapshot))

    def _drop_snapshot(self, full):
        """Destroy ``full`` (deferred), or give a kept sync point back."""
        try:
            props = self.zfs.get(full, ('guid', SYNC_POINT))
        except exception.NotFound:
            LOG.info('Snapshot %s is already gone.', full)
            return
        point = props.get(SYNC_POINT)
        if sync_points.is_sync_point(point):
            dataset = full.split('@')[0]
            synced = lease.parse(self.zfs.get(dataset, lease.PROPS))
            if synced.owner is not None and \
                    props.get('guid') == synced.synced_guid:
                self.zfs.inherit(full, SYNC_POINT)
                self.zfs.rename(full, '%s@%s' % (dataset, point))
                return
            self.zfs.release(full, sync_points.HOLD_TAG)
        self._destroy_quietly(full, defer=True)

    def clone_snapshot(self, name, snapshot, new_name, size_gib):
        """Make volume ``new_name`` an O(1) clone of ``name@snapshot``.

        It is grown to ``size_gib`` GiB if that is larger.

        On failure the new clone is destroyed.
        :raises NotFound: no such snapshot.
        """
        origin = self.snapshot_path(name, snapshot)
        path = self.path(new_name)
        size = validation.size_gib(size_gib) * GiB
        self.zfs.clone(origin, path, properties=self._clone_properties())
        try:
            self._fit_clone(path, size)
        except Exception:
            with excutils.save_and_reraise_exception():
                self._undo(path)
        return path

    def clone_volume(self, name, new_name, size_gib):
        """New volume ``new_name`` as an O(1) clone of volume ``name`` now.

        Takes the snapshot ``@clone-<new_name>``, which lives as long as the
        clone does. On failure neither the clone nor the snapshot remains.
        """
        snapshot = CLONE_SNAPSHOT_PREFIX + new_name
        self.path(new_name)  # validate before anything runs
        validation.size_gib(size_gib)
        self.zfs.snapshot(self.snapshot_path(name, snapshot))
        try:
            return self.clone_snapshot(name, snapshot, new_name, size_gib)
        except Exception:
            with excutils.save_and_reraise_exception():
                self._undo(self.snapshot_path(name, snapshot))

    def _clone_properties(self):
        # Clones inherit compression from the origin; a thick vault reserves
        # their full size (clones are created without refreservation).
        return {} if self.sparse else {'refreservation': 'auto'}

    def _fit_clone(self, path, size):
        current = int(self.zfs.get(path, ('volsize',))['volsize'])
        if size > current:
            self.zfs.set(path, {'volsize': size})

    def revert(self, name, snapshot, size_gib=None):
        """Roll the volume back to ``snapshot`` (``zfs rollback``).

        Newer snapshots that are ours and unused are removed first: those
        made for clones, and the sync points a local replica left as
        restore points (the volume is back in the vault: a revert is
        refused while it is out); a newer snapshot with clones or holds,
        or of the user's (a Cinder snapshot), refuses the revert.
        :param size_gib: the volume's size in Cinder; the zvol is grown back
            to it if the snapshot was taken when it was smaller.
        :raises HasDependents: newer snapshots that cannot be removed.
        :raises NotFound: no such snapshot.
        """
        full = self.snapshot_path(name, snapshot)
        snaps = self.zfs.snapshots(self.path(name))
        names = [s['snap'] for s in snaps]
        if snapshot not in names:
            raise exception.NotFound('%s does not exist' % full)
        newer = snaps[names.index(snapshot) + 1:]
        blocking = [s['name'] for s in newer
                    if s['clones'] or s['userrefs'] or not _ours(s['snap'])]
        if blocking:
            raise exception.HasDependents(
                'cannot revert to %s: newer snapshots %s would be lost'
                % (full, ', '.join(blocking)))
        for snap in newer:
            self._destroy_quietly(snap['name'])
        self.zfs.rollback(full)
        if size_gib:
            self.extend(name, size_gib)

    # -- manage / unmanage --------------------------------------------------

    def _existing(self, existing):
        """Dataset of an existing zvol named relative to root or in full."""
        if not isinstance(existing, str) or not existing:
            raise exception.InvalidInput('a zvol name is required')
        path = existing if existing.startswith(self.root + '/') else \
            '%s/%s' % (self.root, existing)
        validation.dataset(path)
        if path.count('/') != self.root.count('/') + 1:
            raise exception.InvalidInput(
                '%s is not directly under %s' % (existing, self.root))
        props = self.zfs.get(path, ('type', 'volsize', lease.OWNER))
        if props.get('type') != 'volume':
            raise exception.InvalidInput('%s is not a zvol' % path)
        if props.get(lease.OWNER) not in (None, '', '-'):
            # Out on a compute host, with writes the vault has not seen.
            raise exception.InvalidInput('%s is leased to %s' % (
                path, props[lease.OWNER]))
        return path, int(props['volsize'])

    def manageable_size_gib(self, existing):
        """Size in whole GiB (rounded up) of a zvol to manage."""
        _path, size = self._existing(existing)
        return int(math.ceil(size / float(GiB)))

    def manage(self, existing, name):
        """Take an existing zvol (a pre-existing disk image) as ``name``.

        It is renamed to ``<root>/<name>``; its data is untouched.

        :raises InvalidInput: not a zvol directly under root, or leased
            to a compute host.
        :raises AlreadyExists: ``name`` is taken.
        """
        path, _size = self._existing(existing)
        target = self.path(name)
        if path != target:
            self.zfs.rename(path, target)

    def manageable(self):
        """Every zvol directly under root, as :data:`Manageable` rows."""
        rows = self.zfs.list(self.root, props=('name', 'volsize', 'origin'),
                             types=('volume',), depth=1)
        return [Manageable(r['name'].split('/')[-1], int(r['volsize']),
                           None if r['origin'] in ('', '-') else r['origin'])
                for r in rows]

    # -- capacity -----------------------------------------------------------

    def stats(self):
        """Capacity of the root dataset and the volumes in it, in bytes.

        One ``zfs list`` over the tree: ``total`` is used + available of the
        root (what its volumes can use), ``free`` its available bytes,
        ``provisioned`` the sum of every zvol's ``volsize``.
        """
        rows = self.zfs.list(self.root,
                             props=('name', 'type', 'used', 'available',
                                    'volsize'),
                             types=('filesystem', 'volume'))
        root = next(r for r in rows if r['name'] == self.root)
        volumes = [r for r in rows if r['type'] == 'volume']
        used, free = int(root['used']), int(root['available'])
        return Stats(total=used + free, free=free,
                     provisioned=sum(int(r['volsize']) for r in volumes),
                     volumes=len(volumes))
