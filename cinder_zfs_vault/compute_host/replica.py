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

from cinder_zfs_vault.compute_host import names
from cinder_zfs_vault.compute_host.phases import attach
from cinder_zfs_vault.compute_host.phases import cutover
from cinder_zfs_vault.compute_host.phases import detach
from cinder_zfs_vault.compute_host.phases import recovery
from cinder_zfs_vault.compute_host.phases import seed
from cinder_zfs_vault.compute_host.phases import sync
from cinder_zfs_vault.compute_host import vault_client
from cinder_zfs_vault import exception
from cinder_zfs_vault import opts

#: Tunables: rates (bytes/second; None: the volume's attribute), then the
#: ``[zfs_vault_agent]`` options of opts.engine_opts (seconds, and the
#: local sync points kept). The vault keeps its own restore points
#: (``[zfs_vault_endpoint] keep_sync_points``).
Settings = collections.namedtuple(
    'Settings', 'upload_rate download_rate keep_local '
                'merge_timeout stall_timeout device_timeout slot_timeout')


def settings(group=None):
    """:data:`Settings` from a ``[zfs_vault_agent]`` group (oslo.config).

    :param group: None for the options' defaults.
    """
    values = {opt.dest: opt.default if group is None
              else getattr(group, opt.dest) for opt in opts.engine_opts}
    return Settings(upload_rate=None, download_rate=None,
                    keep_local=values['keep_local_sync_points'],
                    merge_timeout=values['merge_timeout'],
                    stall_timeout=values['stall_timeout'],
                    device_timeout=values['device_timeout'],
                    slot_timeout=values['slot_timeout'])


DEFAULTS = settings()


class ReplicaEngine(attach.Attach, seed.Seed, cutover.CutOver, sync.Sync,
                    detach.Detach, recovery.Recovery):
    """Lazy local replicas of vault zvols on one compute host.

    The facade over the phases (``phases/``), one mixin each.

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
        crash is most delicate (``attach.cow``: the COW zvol made, no
        device yet; ``cutover.suspended``: the VM's I/O is held); the kill
        and power-cut tests stop the engine there.
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
        #: The seeds a caller waits on go unthrottled (seed.Urgency).
        self.urgency = seed.Urgency()
        #: Room on the compute pool promised to seeds in flight.
        self.seed_room = seed.Room()

    def names(self, volume_id):
        return names.Names(volume_id, self.vault_root, self.compute_root)

    def _volsize(self, zfs, dataset):
        return int(zfs.get(dataset, ('volsize',))['volsize'])

    @staticmethod
    def _destroy(zfs, name):
        try:
            zfs.destroy(name)
        except exception.NotFound:
            pass
