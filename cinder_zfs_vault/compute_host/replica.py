"""The replica engine: boot now from the vault, copy behind, switch live,
sync back, return the disk to the vault.

The lifecycle is DESIGN.md's "The lifecycle of a disk with a local replica";
the data path is img-storage's (dm ``snapshot`` over iSCSI, ``snapshot-merge``,
``linear``; ``zfs send -I``), with the corners where img-storage lost data
closed: the local replica is destroyed only after the vault has confirmed the
final snapshot by GUID, receives are never forced, a stale owner is fenced by
the lease generation, and every step can be retried.

The engine runs on the compute host. It reaches the vault only through the
vault endpoint (:class:`~cinder_zfs_vault.compute_host.vault_client.
VaultClient`): the vault takes the leases, exports the origin for this
host's initiator, picks and sends the seed, and lands (or fences) the syncs.

Datasets and devices of volume ``volume-<id>``:

* vault zvol ``<vault_root>/volume-<id>`` (the disk; leased while out);
* local replica ``<compute_root>/volume-<id>`` (received from the vault);
* COW zvol ``<compute_root>/volume-<id>-cow`` (writes before cut-over);
* ``/dev/mapper/zvault-<id>``: the device the VM uses, all along: a
  ``linear`` map of ``zvault-<id>-snap`` (the dm ``snapshot`` of the iSCSI
  origin with the COW zvol), then of ``zvault-<id>-merge`` (the
  ``snapshot-merge`` into the local replica) during the cut-over, then of
  the local replica itself (see dm.py for why it is stacked);
* sync points ``@zv-<n>-<uuid8>`` on both sides.

No Cinder object enters here.
"""

import collections
import contextlib
import time

from oslo_log import log as logging

from cinder_zfs_vault.compute_host import dm as dmlib
from cinder_zfs_vault.compute_host import vault_client
from cinder_zfs_vault import exception
from cinder_zfs_vault import lease as leaselib
from cinder_zfs_vault import plan
from cinder_zfs_vault import protocol
from cinder_zfs_vault import sync_points as points
from cinder_zfs_vault import transfer
from cinder_zfs_vault import validation

LOG = logging.getLogger(__name__)

HOLD_TAG = points.HOLD_TAG

#: Tunables, with img-storage's defaults where it had them.
Settings = collections.namedtuple(
    'Settings', 'upload_rate download_rate keep_local '
                'merge_timeout stall_timeout device_timeout')
#: (The vault keeps its own restore points: [zfs_vault_endpoint]
#: keep_sync_points.)
DEFAULTS = Settings(upload_rate=None, download_rate=None, keep_local=2,
                    merge_timeout=600, stall_timeout=120, device_timeout=60)

#: What :meth:`ReplicaEngine.sync` did.
SyncResult = collections.namedtuple('SyncResult',
                                    'snapshot guid bytes seconds')


class Names(object):
    """Every name of one volume's replica, validated once."""

    def __init__(self, volume_id, vault_root, compute_root):
        self.volume_id = validation.volume_id(volume_id)
        self.name = 'volume-' + self.volume_id
        self.vault = validation.volume_dataset(vault_root, self.volume_id)
        self.local = '%s/%s' % (validation.dataset(compute_root), self.name)
        self.cow = self.local + '-cow'
        self.dm = 'zvault-' + self.volume_id
        self.dm_snap = self.dm + '-snap'
        self.dm_merge = self.dm + '-merge'

    @property
    def device(self):
        return dmlib.DeviceMapper.path(self.dm)

    @staticmethod
    def zvol(dataset):
        return '/dev/zvol/' + dataset


def _reporter(progress, expected):
    """transfer.pipe's progress(done) as progress(done, expected)."""
    if progress is None:
        return None
    return lambda done: progress(done, expected)


class ReplicaEngine(object):
    """Lazy local replicas of vault zvols on one compute host.

    :param vault: :class:`~cinder_zfs_vault.compute_host.vault_client.
        VaultClient`, this host's way to the vault endpoint.
    :param compute_zfs: ZFS layer of this compute host.
    :param dm: :class:`~.dm.DeviceMapper` of this host.
    :param connector: os-brick iSCSI connector of this host.
    :param host: this host's name (the lease owner; the vault knows it
        from the host's key, this is for messages and listings).
    :param portal: ``ip:port`` of the vault's iSCSI portal (to log out of
        an origin after a restart).
    :param vault_root, compute_root: datasets holding the zvols.
    :param settings: :data:`Settings`.
    :param notify: optional callable(step name) at the points where a
        crash is most delicate (``cutover.suspended``: the VM's I/O is
        held); the kill tests stop the engine there.
    :param quiesce: optional callable(volume_id) -> context manager that
        holds the VM around each table swap (e.g. a libvirt domain
        suspend). Not needed for safety: a suspended dm device queues the
        writes in flight. Default: none.
    """

    def __init__(self, vault, compute_zfs, dm, connector, host, portal,
                 vault_root, compute_root, settings=DEFAULTS, notify=None,
                 quiesce=None):
        self.vault = vault
        self.compute_zfs = compute_zfs
        self.attributes = vault_client.VaultAttributes(vault, vault_root)
        self.dm = dm
        self.connector = connector
        self.host = host
        self.portal = portal
        self.vault_root = vault_root
        self.compute_root = compute_root
        self.settings = settings
        self.notify = notify or (lambda step: None)
        self.quiesce = quiesce or (lambda volume_id: contextlib.nullcontext())
        #: volume id -> (os-brick properties, device info) of the origin
        #: sessions this process logged in.
        self._origin = {}

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
        if self._seeded(n) and not self.compute_zfs.exists(n.cow):
            # Warm re-attach: the replica holds every write; map it directly.
            local = dmlib.wait_for_device(n.zvol(n.local),
                                          self.settings.device_timeout)
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
                # Room for every chunk plus the exception store's metadata.
                self.compute_zfs.create_volume(n.cow, size + size // 16
                                               + 64 * 1024 * 1024,
                                               sparse=True, properties=held)
                undo.callback(self._destroy, self.compute_zfs, n.cow)
            cow = dmlib.wait_for_device(n.zvol(n.cow),
                                        self.settings.device_timeout)
            if not self.dm.exists(n.dm_snap):
                self.dm.create(n.dm_snap,
                               dmlib.snapshot_table(sectors, origin, cow))
                undo.callback(self.dm.remove, n.dm_snap)
            self.dm.create(n.dm, dmlib.linear_table(
                sectors, self.dm.devno(n.dm_snap)))
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
            self.vault.unexport(n.volume_id, generation)
            raise
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
        self.connector.disconnect_volume(props, info, force=True)
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

    # -- 2. seed ------------------------------------------------------------

    def _seeded(self, n):
        """True when the local replica holds a complete received snapshot."""
        try:
            return bool(points.of(self.compute_zfs.snapshots(n.local)))
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
        generation = self._generation(n)
        token = transfer.resume_token(self.compute_zfs, n.local)
        if token:
            send = self.vault.send_argv(n.volume_id, generation, token=token)
            expected = 0
        else:
            # The vault picks the sync point (one the zvol was not written
            # after) and holds it while the replica is out.
            seed = self.vault.seed(n.volume_id, generation)
            send = self.vault.send_argv(n.volume_id, generation,
                                        snap=seed['snap'])
            expected = seed['bytes']
        result = transfer.pipe(
            send, self.compute_zfs.stream_argv(transfer.recv_argv(n.local)),
            rate=self._rate(n, 'download_rate', rate),
            stall_timeout=self.settings.stall_timeout,
            progress=_reporter(progress, expected))
        received = self.compute_zfs.snapshots(n.local)
        vault_guids = {s['guid'] for s in
                       self.vault.info(n.volume_id)['snapshots']}
        if not received or received[-1]['guid'] not in vault_guids:
            raise exception.Diverged('%s: received snapshot not found on '
                                     'the vault' % n.local)
        # The generation this host holds moves from the COW to the replica.
        self.compute_zfs.set(n.local, {leaselib.GENERATION: generation})
        return result

    def _rate(self, n, kind, rate, info=None):
        """Bytes/second for a transfer; 0 or None is unlimited.

        The caller's rate, else the engine's setting, else the volume's
        attribute (which falls back to the vault's; attributes.py), from
        ``info`` when the caller has the vault's answer already.
        """
        for value in (rate, getattr(self.settings, kind)):
            if value is not None:
                return value
        return (info or self.vault.info(n.volume_id))[kind]

    # -- 3. cut-over --------------------------------------------------------

    def cutover(self, volume_id):
        """Switch the live device from the iSCSI origin to the local copy.

        The VM's device is pointed from the dm ``snapshot`` to a new
        ``snapshot-merge`` of the local copy with the COW zvol; when the
        merge is done it is pointed at the local copy itself; then the COW
        zvol, the iSCSI session and the origin export go. The VM's I/O
        pauses twice, for one table swap of a ``linear`` each. Idempotent:
        a cut-over interrupted at any step is finished by calling it again.
        :raises InvalidInput: the local copy is not seeded yet.
        :raises CommandFailed: the merge did not finish in merge_timeout.
        :returns: the I/O pauses, seconds (two on a full cut-over).
        """
        n = self.names(volume_id)
        if not self._seeded(n):
            raise exception.InvalidInput('%s is not seeded yet' % n.local)
        sectors = dmlib.sectors(self._volsize(self.compute_zfs, n.local))
        local = dmlib.wait_for_device(n.zvol(n.local),
                                      self.settings.device_timeout)
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
        self._destroy(self.compute_zfs, n.cow)
        return pauses

    def _switch_to_merge(self, n, sectors, local):
        """Point the VM's device at a new snapshot-merge device.

        The ``snapshot`` device is suspended (idle and flushed) before the
        merge device reads the same COW zvol's exception store, and removed
        after, so the two never run on the COW together.
        :returns: seconds the VM's I/O was paused.
        """
        self.dm.suspend(n.dm)
        start = time.monotonic()
        try:
            self.dm.suspend(n.dm_snap)
            self.notify('cutover.suspended')
            if not self.dm.exists(n.dm_merge):
                self.dm.create(n.dm_merge, dmlib.merge_table(
                    sectors, local, n.zvol(n.cow)), udev=False)
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

    # -- 4. sync back -------------------------------------------------------

    def sync(self, volume_id, rate=None, progress=None):
        """Send the changes since the last sync point to the vault.

        Snapshot the local replica, ``zfs send -I`` from the newest common
        sync point into the vault zvol, check the received GUID, then move
        the lease's synced GUID and prune old sync points.
        :param rate: bytes/second; 0 is unlimited, None the upload limit
            in settings.
        :param progress: callable(bytes_done, bytes_expected).
        :raises Fenced: the vault refused the sync: the lease is not this
            host's generation any more (checked by the vault when the sync
            lands; the vault is unchanged).
        :raises Diverged: the vault zvol changed since the common snapshot.
        :returns: :data:`SyncResult`.
        """
        n = self.names(volume_id)
        if not self.compute_zfs.exists(n.local):
            raise exception.InvalidInput(
                '%s has no local replica on %s (not attached here, not '
                'seeded, or in non-sync mode)' % (n.vault, self.host))
        generation = self._generation(n)
        info = self.vault.info(n.volume_id)
        if info['resume_token']:
            info = self._resume_cut_sync(n, generation, info, rate)
        snap = '%s@%s' % (n.local, points.next_name(
            self.compute_zfs.snapshots(n.local)))
        self.compute_zfs.snapshot(snap)
        local_snaps = self.compute_zfs.snapshots(n.local)
        step = plan.step(local_snaps, info['snapshots'], local_snaps[-1],
                         receiver_written=info['written'])
        if isinstance(step, plan.Diverged):
            # Refused before a byte moves; never rolled back (no recv -F).
            raise exception.Diverged(plan.explain(step, n.local, n.vault))
        if not isinstance(step, plan.Incremental):
            raise exception.Diverged('%s holds no snapshot of %s to build '
                                     'on' % (n.vault, n.local))
        base, guid = step.base['name'], step.target['guid']
        expected = transfer.estimate(self.compute_zfs, snap, base)
        result = transfer.pipe(
            self.compute_zfs.stream_argv(transfer.send_argv(snap, base=base)),
            self.vault.receive_argv(n.volume_id, generation, guid),
            rate=self._rate(n, 'upload_rate', rate, info),
            stall_timeout=self.settings.stall_timeout,
            progress=_reporter(progress, expected))
        # The vault landed it under our generation, with our GUID, or the
        # receiving end failed (and pipe raised the vault's error).
        self._prune(n, snap.split('@')[1])
        return SyncResult(snap, guid, result.bytes, result.seconds)

    def _resume_cut_sync(self, n, generation, info, rate):
        """Finish a sync whose stream was cut (its token is on the vault).

        A receive left half done blocks every later receive into the zvol;
        resuming it sends only the missing bytes (``zfs-send(8)`` ``-t``).
        :returns: the vault's info after it.
        """
        LOG.info('%s: resuming a cut sync from its token', n.vault)
        transfer.pipe(
            self.compute_zfs.stream_argv(
                transfer.send_argv(token=info['resume_token'])),
            self.vault.receive_argv(n.volume_id, generation),
            rate=self._rate(n, 'upload_rate', rate, info),
            stall_timeout=self.settings.stall_timeout)
        return self.vault.info(n.volume_id)

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
        """Keep the newest local sync points (the vault prunes its own).

        The newest is held as the next incremental base.
        """
        zfs, keep = self.compute_zfs, self.settings.keep_local
        kept = points.of(zfs.snapshots(n.local))
        zfs.hold('%s@%s' % (n.local, newest), HOLD_TAG)
        for snap in kept[:-keep] if keep else kept:
            if snap['snap'] == newest:
                continue
            zfs.release(snap['name'], HOLD_TAG)
            self._destroy(zfs, snap['name'])
        for snap in kept[-keep:]:
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
        and the lease released. Idempotent; the steps are :meth:`unmap`,
        :meth:`sync` (``rate=0``) and :meth:`retire`, which the detach flow
        (flows.py) runs as separate tasks.
        :raises Busy: the device is open.
        :returns: the final :data:`SyncResult`, or None if nothing was out.
        """
        if not self.unmap(volume_id):
            self.retire(volume_id, None)
            return None
        final = self.sync(volume_id, rate=0)
        self.retire(volume_id, final.snapshot)
        return final

    def unmap(self, volume_id):
        """Remove the VM's device, the replica complete first.

        :raises Busy: the device is open.
        :returns: True if a local replica is here to sync back.
        """
        n = self.names(volume_id)
        if not self.dm.exists(n.dm) and self.compute_zfs.exists(n.cow):
            # The device went (a reboot) with writes in the COW zvol: map it
            # again (its exception store is persistent) so they are merged.
            self.attach(volume_id)
        if self.dm.exists(n.dm):
            if self.dm.in_use(n.dm):
                raise exception.Busy('%s is in use' % n.device)
            mapping = self.mapping(volume_id)
            if mapping == 'vault':
                # Non-sync mode: every write is in the vault already.
                self.dm.remove(n.dm)
                self._disconnect_origin(n)
                return False
            if mapping != 'local':
                self.seed(volume_id, rate=0)
                self.cutover(volume_id)
            self.dm.remove(n.dm)
        return self.compute_zfs.exists(n.local)

    def remap(self, volume_id):
        """Give back the device :meth:`unmap` removed (a failed detach)."""
        n = self.names(volume_id)
        if self.dm.exists(n.dm) or not self.compute_zfs.exists(n.local):
            return
        sectors = dmlib.sectors(self._volsize(self.compute_zfs, n.local))
        local = dmlib.wait_for_device(n.zvol(n.local),
                                      self.settings.device_timeout)
        self.dm.create(n.dm, dmlib.linear_table(sectors, local))

    def retire(self, volume_id, final_snapshot):
        """Destroy the local replica once the vault holds it; release.

        :param final_snapshot: the final sync point (``pool/vol@zv-…``),
            or None when no replica was out.
        :raises Diverged: the vault does not hold the final snapshot with
            the replica's GUID (nothing destroyed).
        """
        n = self.names(volume_id)
        if final_snapshot is None or not self.compute_zfs.exists(n.local):
            # Nothing out, or destroyed after confirmation by an earlier
            # try: only the lease may be left.
            self._release_if_ours(n)
            return
        snap = final_snapshot.split('@')[1]
        local_guid = self.compute_zfs.get('%s@%s' % (n.local, snap),
                                          ('guid',))['guid']
        if self.unsynced_bytes(volume_id):
            raise exception.Diverged('%s was written after the final sync'
                                     % n.local)
        generation = self._generation(n)
        # Raises Diverged (nothing destroyed) unless the vault holds it.
        self.vault.confirm(n.volume_id, generation, snap, local_guid)
        # The vault holds every write now: the replica may go. The vault
        # releases its own holds with the lease.
        for s in self.compute_zfs.snapshots(n.local):
            self.compute_zfs.release(s['name'], HOLD_TAG)
        self.compute_zfs.destroy(n.local, recursive=True)
        self.vault.release(n.volume_id, generation)

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
            lease = self.vault.info(n.volume_id)['lease']
        except protocol.NotYours:
            lease = None  # free, or another host's: not this host's
        if lease and lease['owner'] == self.host:
            # Whatever generation is recorded here (none, after a crash
            # between the seed's receive and recording it): the vault has
            # not fenced this host, so its writes are not lost yet.
            raise exception.InvalidInput('%s still holds %s: detach it'
                                         % (self.host, n.vault))
        if self.dm.exists(n.dm):
            if self.dm.in_use(n.dm):
                raise exception.Busy('%s is in use' % n.device)
            self.dm.remove(n.dm)
        for name in (n.dm_merge, n.dm_snap):
            self.dm.remove(name)
        self._disconnect_origin(n)
        for dataset in (n.local, n.cow):
            if self.compute_zfs.exists(dataset):
                for snap in self.compute_zfs.snapshots(dataset):
                    self.compute_zfs.release(snap['name'], HOLD_TAG)
                self.compute_zfs.destroy(dataset, recursive=True)

    def _release_if_ours(self, n):
        generation = self._vault_generation(n)
        if generation is not None:
            self.vault.release(n.volume_id, generation)

    # -- after a crash --------------------------------------------------------

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

    @staticmethod
    def _destroy(zfs, name):
        try:
            zfs.destroy(name)
        except exception.NotFound:
            pass

    def state(self, volume_id):
        """'in vault', 'seeding', 'local', 'direct' or 'releasing' here.

        'direct' is a disk attached in non-sync mode (writes go straight
        to the vault).
        """
        n = self.names(volume_id)
        mapping = self.mapping(volume_id)
        if mapping:
            return {'local': 'local', 'vault': 'direct'}.get(mapping,
                                                             'seeding')
        if self.compute_zfs.exists(n.local):
            return 'releasing'
        return 'in vault'
