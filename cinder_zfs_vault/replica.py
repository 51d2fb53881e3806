"""The replica engine: boot now from the vault, copy behind, switch live,
sync back, return the disk to the vault.

The lifecycle is DESIGN.md's "The lifecycle of a disk with a local replica";
the data path is img-storage's (dm ``snapshot`` over iSCSI, ``snapshot-merge``,
``linear``; ``zfs send -I``), with the corners where img-storage lost data
closed: the local replica is destroyed only after the vault has confirmed the
final snapshot by GUID, receives are never forced, a stale owner is fenced by
the lease generation, and every step can be retried.

Datasets and devices of volume ``volume-<id>``:

* vault zvol ``<vault_root>/volume-<id>`` (the disk; leased while out);
* local replica ``<compute_root>/volume-<id>`` (received from the vault);
* COW zvol ``<compute_root>/volume-<id>-cow`` (writes before cut-over);
* ``/dev/mapper/zvault-<id>``: the device the VM uses, all along;
* sync points ``@zv-<n>-<uuid8>`` on both sides.

No Cinder object enters here.
"""

import collections
import re
import secrets
import uuid

from oslo_log import log as logging

from cinder_zfs_vault import dm as dmlib
from cinder_zfs_vault import exception
from cinder_zfs_vault import lease as leaselib
from cinder_zfs_vault import transfer
from cinder_zfs_vault import validation

LOG = logging.getLogger(__name__)

SYNC_POINT_RE = re.compile(r'^zv-(\d+)-[0-9a-f]{8}$')
HOLD_TAG = 'zfsvault-base'

#: Tunables, with img-storage's defaults where it had them.
Settings = collections.namedtuple(
    'Settings', 'upload_rate download_rate keep_vault keep_local '
                'merge_timeout stall_timeout device_timeout')
DEFAULTS = Settings(upload_rate=None, download_rate=None, keep_vault=3,
                    keep_local=2, merge_timeout=600, stall_timeout=120,
                    device_timeout=60)

#: What :meth:`ReplicaEngine.sync` did.
SyncResult = collections.namedtuple('SyncResult',
                                    'snapshot guid bytes seconds')


class Names(object):
    """Every name of one volume's replica, validated once."""

    def __init__(self, volume_id, vault_root, compute_root):
        self.volume_id = validation.volume_id(volume_id)
        self.name = 'volume-' + self.volume_id
        self.vault = '%s/%s' % (validation.dataset(vault_root), self.name)
        self.local = '%s/%s' % (validation.dataset(compute_root), self.name)
        self.cow = self.local + '-cow'
        self.dm = 'zvault-' + self.volume_id

    @property
    def device(self):
        return dmlib.DeviceMapper.path(self.dm)

    @staticmethod
    def zvol(dataset):
        return '/dev/zvol/' + dataset


def sync_points(snaps):
    """Our sync points among ``zfs.snapshots()`` rows, oldest first."""
    return [s for s in snaps if SYNC_POINT_RE.match(s['snap'])]


def next_sync_point(snaps):
    numbers = [int(SYNC_POINT_RE.match(s['snap']).group(1))
               for s in sync_points(snaps)]
    return 'zv-%d-%s' % (max(numbers, default=0) + 1, uuid.uuid4().hex[:8])


def newest_common(local_snaps, vault_snaps):
    """Newest local snapshot the vault has too (same GUID), or None."""
    vault_guids = {s['guid'] for s in vault_snaps}
    common = [s for s in local_snaps if s['guid'] in vault_guids]
    return common[-1] if common else None


class ReplicaEngine(object):
    """Lazy local replicas of vault zvols on one compute host.

    :param vault_zfs: ZFS layer of the vault (local or over SSH).
    :param compute_zfs: ZFS layer of this compute host.
    :param dm: :class:`~cinder_zfs_vault.dm.DeviceMapper` of this host.
    :param exporter: :class:`~cinder_zfs_vault.origin.OriginExporter` on the
        vault.
    :param connector: os-brick iSCSI connector of this host.
    :param host: this host's name (the lease owner).
    :param initiator: this host's iSCSI initiator IQN.
    :param vault_root, compute_root: datasets holding the zvols.
    :param settings: :data:`Settings`.
    """

    def __init__(self, vault_zfs, compute_zfs, dm, exporter, connector,
                 host, initiator, vault_root, compute_root,
                 settings=DEFAULTS):
        self.vault_zfs = vault_zfs
        self.compute_zfs = compute_zfs
        self.leases = leaselib.Leases(vault_zfs)
        self.dm = dm
        self.exporter = exporter
        self.connector = connector
        self.host = host
        self.initiator = initiator
        self.vault_root = vault_root
        self.compute_root = compute_root
        self.settings = settings

    def names(self, volume_id):
        return Names(volume_id, self.vault_root, self.compute_root)

    def _volsize(self, zfs, dataset):
        return int(zfs.get(dataset, ('volsize',))['volsize'])

    # -- 1. attach ----------------------------------------------------------

    def attach(self, volume_id):
        """Take the lease and give the VM a device at once.

        The device is a dm ``snapshot`` of the vault zvol (over a read-only
        iSCSI export) with a sparse local COW zvol, unless a warm local
        replica from an earlier attach is still here, in which case it is a
        ``linear`` map of that replica. Idempotent.

        :returns: ``/dev/mapper/zvault-<id>``.
        :raises LeaseHeld: another host has the disk (nothing changed).
        """
        n = self.names(volume_id)
        lease = self.leases.acquire(n.vault, self.host)
        held = {leaselib.GENERATION: lease.generation}
        if self.compute_zfs.exists(n.local):
            self.compute_zfs.set(n.local, held)
        if self.dm.exists(n.dm):
            return n.device
        size = self._volsize(self.vault_zfs, n.vault)
        sectors = dmlib.sectors(size)
        if self._seeded(n) and not self.compute_zfs.exists(n.cow):
            # Warm re-attach: the replica holds every write; map it directly.
            local = dmlib.wait_for_device(n.zvol(n.local),
                                          self.settings.device_timeout)
            self.dm.create(n.dm, dmlib.linear_table(sectors, local))
            return n.device
        origin = self._connect_origin(n)
        try:
            if not self.compute_zfs.exists(n.cow):
                # Room for every chunk plus the exception store's metadata.
                self.compute_zfs.create_volume(n.cow, size + size // 16
                                               + 64 * 1024 * 1024,
                                               sparse=True, properties=held)
            cow = dmlib.wait_for_device(n.zvol(n.cow),
                                        self.settings.device_timeout)
            self.dm.create(n.dm, dmlib.snapshot_table(sectors, origin, cow))
        except Exception:
            self._disconnect_origin(n)
            self._destroy(self.compute_zfs, n.cow)
            raise
        return n.device

    def _connect_origin(self, n):
        user = 'zv' + secrets.token_hex(6)
        export = self.exporter.export(n.name, n.zvol(n.vault),
                                      self.initiator, user,
                                      secrets.token_urlsafe(12))
        try:
            info = self.connector.connect_volume(export.properties)
        except Exception:
            self.exporter.unexport(n.name)
            raise
        self._origin = getattr(self, '_origin', {})
        self._origin[n.volume_id] = (export.properties, info)
        return info['path']

    def _disconnect_origin(self, n):
        """Log out of the origin and remove its export (idempotent).

        After a restart the session's properties are rebuilt from the names
        (os-brick finds the devices from IQN, portal and LUN).
        """
        props, info = getattr(self, '_origin', {}).pop(n.volume_id,
                                                       (None, None))
        if props is None:
            props = {'target_iqn': self.exporter.iqn(n.name),
                     'target_portal': '%s:%d' % (self.exporter.portal_ip,
                                                 self.exporter.port),
                     'target_lun': 0}
        self.connector.disconnect_volume(props, info, force=True)
        self.exporter.unexport(n.name)

    # -- 2. seed ------------------------------------------------------------

    def _seeded(self, n):
        """True when the local replica holds a complete received snapshot."""
        try:
            return bool(sync_points(self.compute_zfs.snapshots(n.local)))
        except exception.NotFound:
            return False

    def seed(self, volume_id, rate=None, progress=None):
        """Copy the vault zvol into the local pool behind the running VM.

        A full ``zfs send`` of a new vault sync point into a resumable
        receive; a cut stream is resumed from its token on the next call.
        :param rate: bytes/second; 0 is unlimited, None the download limit
            in settings.
        :param progress: callable(bytes_done, bytes_expected).
        :returns: :data:`~cinder_zfs_vault.transfer.Result`.
        """
        n = self.names(volume_id)
        if self._seeded(n):
            return transfer.Result(0, 0.0)
        token = transfer.resume_token(self.compute_zfs, n.local)
        if token:
            send = transfer.send_argv(token=token)
            expected = 0
        else:
            snaps = sync_points(self.vault_zfs.snapshots(n.vault))
            if snaps:
                snap = snaps[-1]['name']
            else:
                snap = '%s@%s' % (n.vault, next_sync_point([]))
                self.vault_zfs.snapshot(snap)
            self.vault_zfs.hold(snap, HOLD_TAG)
            send = transfer.send_argv(snap)
            expected = transfer.estimate(self.vault_zfs._execute, snap)
        report = (lambda done: progress(done, expected)) if progress \
            else None
        result = transfer.pipe(
            send, transfer.recv_argv(n.local),
            rate=rate if rate is not None else self.settings.download_rate,
            stall_timeout=self.settings.stall_timeout, progress=report)
        self._check_received(n, self.vault_zfs, n.vault, self.compute_zfs,
                             n.local)
        # The generation this host holds moves from the COW to the replica.
        generation = self.compute_zfs.get(n.cow, (leaselib.GENERATION,))
        self.compute_zfs.set(n.local, generation)
        return result

    def _check_received(self, n, src_zfs, src, dst_zfs, dst):
        """The newest snapshot of ``dst`` must match ``src`` by GUID."""
        dst_snaps = dst_zfs.snapshots(dst)
        src_guids = {s['guid'] for s in src_zfs.snapshots(src)}
        if not dst_snaps or dst_snaps[-1]['guid'] not in src_guids:
            raise exception.Diverged('%s: received snapshot not found on %s'
                                     % (dst, src))
        return dst_snaps[-1]

    # -- 3. cut-over --------------------------------------------------------

    def cutover(self, volume_id):
        """Switch the live device from the iSCSI origin to the local copy.

        Suspend, reload as ``snapshot-merge`` of the local copy with the COW
        zvol, resume; when the merge is done reload as ``linear``; then the
        COW zvol, the iSCSI session and the origin export go. Idempotent.
        :returns: the two I/O pauses, seconds.
        """
        n = self.names(volume_id)
        if not self._seeded(n):
            raise exception.InvalidInput('%s is not seeded yet' % n.local)
        sectors = dmlib.sectors(self._volsize(self.compute_zfs, n.local))
        local = dmlib.wait_for_device(n.zvol(n.local),
                                      self.settings.device_timeout)
        pauses = []
        kind = self.dm.target_type(n.dm)
        if kind == 'snapshot':
            cow = n.zvol(n.cow)
            pauses.append(self.dm.swap(n.dm, dmlib.merge_table(sectors,
                                                               local, cow)))
            kind = 'snapshot-merge'
        if kind == 'snapshot-merge':
            self.dm.wait_merged(n.dm, self.settings.merge_timeout)
            pauses.append(self.dm.swap(n.dm, dmlib.linear_table(sectors,
                                                                local)))
        self._disconnect_origin(n)
        self._destroy(self.compute_zfs, n.cow)
        return pauses

    # -- 4. sync back -------------------------------------------------------

    def sync(self, volume_id, rate=None):
        """Send the changes since the last sync point to the vault.

        Snapshot the local replica, ``zfs send -I`` from the newest common
        sync point into the vault zvol, check the received GUID, then move
        the lease's synced GUID and prune old sync points.
        :raises Fenced: the lease is not ours any more (nothing sent).
        :raises Diverged: the vault zvol changed since the common snapshot.
        :returns: :data:`SyncResult`.
        """
        n = self.names(volume_id)
        lease = self.leases.check(n.vault, self.host, self._generation(n))
        local_snaps = self.compute_zfs.snapshots(n.local)
        snap = '%s@%s' % (n.local, next_sync_point(local_snaps))
        self.compute_zfs.snapshot(snap)
        base = newest_common(local_snaps,
                             self.vault_zfs.snapshots(n.vault))
        if base is None:
            raise exception.Diverged('%s and %s share no snapshot'
                                     % (n.local, n.vault))
        # Re-check just before sending: a break between the two is fenced.
        self.leases.check(n.vault, self.host, lease.generation)
        result = transfer.pipe(
            transfer.send_argv(snap, base=base['name']),
            transfer.recv_argv(n.vault),
            rate=rate if rate is not None else self.settings.upload_rate,
            stall_timeout=self.settings.stall_timeout)
        guid = self.compute_zfs.get(snap, ('guid',))['guid']
        received = self.vault_zfs.get('%s@%s' % (n.vault,
                                                 snap.split('@')[1]),
                                      ('guid',))['guid']
        if received != guid:
            raise exception.Diverged('%s: vault has GUID %s, local %s'
                                     % (snap, received, guid))
        self.leases.confirm_sync(n.vault, self.host, lease.generation, guid)
        self._prune(n, snap.split('@')[1])
        return SyncResult(snap, guid, result.bytes, result.seconds)

    def _generation(self, n):
        """The lease generation this host was given.

        It is recorded with the replica, so a host that was fenced cannot
        pick up a newer one.
        """
        for dataset in (n.local, n.cow):
            try:
                value = self.compute_zfs.get(
                    dataset, (leaselib.GENERATION,))[leaselib.GENERATION]
            except exception.NotFound:
                continue
            if value not in ('', '-'):
                return int(value)
        raise leaselib.Fenced('%s: no lease generation recorded here'
                              % n.local)

    def _prune(self, n, newest):
        """Keep the newest sync points.

        A few stay on the vault as restore points, one or two locally; the
        newest is held on both sides as the next incremental base.
        """
        for zfs, dataset, keep in ((self.vault_zfs, n.vault,
                                    self.settings.keep_vault),
                                   (self.compute_zfs, n.local,
                                    self.settings.keep_local)):
            points = sync_points(zfs.snapshots(dataset))
            zfs.hold('%s@%s' % (dataset, newest), HOLD_TAG)
            for snap in points[:-keep] if keep else points:
                if snap['snap'] == newest:
                    continue
                zfs.release(snap['name'], HOLD_TAG)
                self._destroy(zfs, snap['name'])
            for snap in points[-keep:]:
                if snap['snap'] != newest:
                    zfs.release(snap['name'], HOLD_TAG)

    def unsynced_bytes(self, volume_id):
        """Bytes written locally since the newest sync point (``written``)."""
        n = self.names(volume_id)
        return int(self.compute_zfs.get(n.local, ('written',))['written'])

    # -- 5. detach ----------------------------------------------------------

    def detach(self, volume_id):
        """Return the disk to the vault.

        The device must be unused. It is removed (after the seed and
        cut-over if they had not happened, so no write is stranded in the
        COW zvol), a final unthrottled sync runs, and only once the vault
        reports the final snapshot's GUID is the local replica destroyed
        and the lease released. Idempotent.
        :raises Busy: the device is open.
        :returns: the final :data:`SyncResult`, or None if nothing was out.
        """
        n = self.names(volume_id)
        if self.dm.exists(n.dm):
            if self.dm.open_count(n.dm):
                raise exception.Busy('%s is in use' % n.device)
            if self.dm.target_type(n.dm) != 'linear':
                self.seed(volume_id, rate=0)
                self.cutover(volume_id)
            self.dm.remove(n.dm)
        if not self.compute_zfs.exists(n.local):
            self._release_if_ours(n)
            return None
        final = self.sync(volume_id, rate=0)
        on_vault = '%s@%s' % (n.vault, final.snapshot.split('@')[1])
        vault_guid = self.vault_zfs.get(on_vault, ('guid',))['guid']
        if vault_guid != final.guid:
            raise exception.Diverged('final sync of %s not confirmed'
                                     % n.vault)
        generation = self._generation(n)
        # The vault holds every write now: the replica may go, and no
        # incremental base needs pinning on either side.
        for zfs, dataset in ((self.compute_zfs, n.local),
                             (self.vault_zfs, n.vault)):
            for snap in zfs.snapshots(dataset):
                zfs.release(snap['name'], HOLD_TAG)
        self.compute_zfs.destroy(n.local, recursive=True)
        self.leases.release(n.vault, self.host, generation)
        return final

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
            mine = self._generation(n)
        except leaselib.Fenced:
            mine = None
        lease = self.leases.get(n.vault)
        if mine is not None and lease.owner == self.host and \
                lease.generation == mine:
            raise exception.InvalidInput('%s still holds %s: detach it'
                                         % (self.host, n.vault))
        if self.dm.exists(n.dm):
            if self.dm.open_count(n.dm):
                raise exception.Busy('%s is in use' % n.device)
            self.dm.remove(n.dm)
        self._disconnect_origin(n)
        for dataset in (n.local, n.cow):
            if self.compute_zfs.exists(dataset):
                for snap in self.compute_zfs.snapshots(dataset):
                    self.compute_zfs.release(snap['name'], HOLD_TAG)
                self.compute_zfs.destroy(dataset, recursive=True)

    def _release_if_ours(self, n):
        lease = self.leases.get(n.vault)
        if lease.owner == self.host:
            self.leases.release(n.vault, self.host, lease.generation)

    @staticmethod
    def _destroy(zfs, name):
        try:
            zfs.destroy(name)
        except exception.NotFound:
            pass

    def state(self, volume_id):
        """'in vault', 'seeding', 'local' or 'released' for this host."""
        n = self.names(volume_id)
        if self.dm.exists(n.dm):
            return ('local' if self.dm.target_type(n.dm) == 'linear'
                    else 'seeding')
        if self.compute_zfs.exists(n.local):
            return 'releasing'
        return 'in vault'
