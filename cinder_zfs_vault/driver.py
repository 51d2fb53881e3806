"""Cinder volume driver: a thin adapter from Cinder objects to the vault core.

Enable it in ``cinder.conf``::

    [zfsvault]
    volume_driver = cinder_zfs_vault.driver.ZFSVaultDriver
    volume_backend_name = zfsvault
    zfs_vault_dataset = vault

Volumes are zvols (:mod:`cinder_zfs_vault.vault_host.volumes`); exports use
Cinder's own target helpers (``lioadm`` by default, ``tgtadm``), as the LVM
driver does, with CHAP credentials generated per volume and kept in
``provider_auth``.

A volume in sync mode that is not multiattach is attached through a local
replica when the connector's host runs a live ``zfs-vault-agent``
(DESIGN.md, "How OpenStack uses it"): the driver calls that agent over
oslo.messaging (``zfs_vault_agent_transport_url``: a virtual host of the
agents, apart from Cinder's own bus) and returns a ``local`` connection,
which nova's libvirt driver hands to the VM as it is; a detach calls the
agent again to return the disk to the vault. Every other attachment is
plain iSCSI.
"""

import contextlib
import math
import os
import time

from cinder import exception as cinder_exception
from cinder.image import image_utils
from cinder import interface
from cinder.volume import driver
from cinder.volume import volume_utils
from oslo_config import cfg
from oslo_log import log as logging
from oslo_utils import excutils
from oslo_utils import importutils
from oslo_utils import units

from cinder_zfs_vault import attributes
from cinder_zfs_vault import exception
from cinder_zfs_vault import executor as executors
from cinder_zfs_vault import lease
from cinder_zfs_vault import opts
from cinder_zfs_vault import rpc
from cinder_zfs_vault.vault_host import agents as agentlib
from cinder_zfs_vault.vault_host import privileged
from cinder_zfs_vault.vault_host import volumes as vault
from cinder_zfs_vault import zfs

LOG = logging.getLogger(__name__)

TARGET_HELPERS = {
    'lioadm': 'cinder.volume.targets.lio.LioAdm',
    'tgtadm': 'cinder.volume.targets.tgt.TgtAdm',
}


def _unprivileged():
    """Whether cinder-volume runs as a user other than root."""
    return os.geteuid() != 0


def target_helper(name, configuration, execute):
    """Cinder's target helper ``name``, reading CHAP from the volume.

    Cinder's helpers look the CHAP credentials up in the database by volume
    id; the volume object the manager hands the driver is that record, so
    this subclass reads ``provider_auth`` from it. It also makes the helper
    usable by the agent and CLI, which have no Cinder database.
    """
    base = importutils.import_class(TARGET_HELPERS[name])

    class VolumeAuthTarget(base):
        def _get_target_chap_auth(self, context, volume):
            auth = volume.get('provider_auth')
            return tuple(auth.split(' ', 3)[1:]) if auth else None

    return VolumeAuthTarget(configuration=configuration, executor=execute)


@contextlib.contextmanager
def _cinder_errors(what):
    """Map core errors onto the Cinder exceptions the manager understands."""
    try:
        yield
    except exception.InvalidInput as e:
        raise cinder_exception.InvalidInput(reason=e.message)
    except exception.Busy as e:
        raise cinder_exception.VolumeIsBusy(volume_name=what) from e
    except (lease.LeaseHeld, lease.Fenced) as e:
        # The API user's answer: out on a compute host, detach it first
        # (or, fenced, an operator settles it).
        raise cinder_exception.InvalidVolume(reason=e.message) from e
    except agentlib.AgentUnreachable as e:
        raise cinder_exception.VolumeBackendAPIException(
            data='%s: %s; nothing changed on the vault, and a retry is '
                 'safe once it answers' % (what, e.message)) from e
    except exception.ZFSVaultError as e:
        raise cinder_exception.VolumeBackendAPIException(
            data='%s: %s' % (what, e.message))


#: Prefix of the volume-type extra specs that set a volume's attributes
#: (DESIGN.md, "How OpenStack uses it", 6).
SPEC_PREFIX = 'zfs_vault:'
#: The attributes a volume type may set (next_sync is a schedule, set by
#: the agent or an operator, not a property of a type).
TYPE_ATTRIBUTES = ('sync_mode', 'frequency', 'upload_rate', 'download_rate')


def _type_specs(volume_type):
    """``{name: raw value}`` of a volume type's ``zfs_vault:<name>`` specs.

    :param volume_type: a Cinder ``VolumeType`` (its ``extra_specs`` are
        read, loaded from the database if need be), or None.
    """
    specs = (volume_type.extra_specs or {}) if volume_type else {}
    return {key[len(SPEC_PREFIX):]: value for key, value in specs.items()
            if key.startswith(SPEC_PREFIX)}


def type_attributes(volume_type):
    """The volume attributes that a volume type's extra specs set.

    ``zfs_vault:sync_mode``, ``zfs_vault:frequency``,
    ``zfs_vault:upload_rate`` and ``zfs_vault:download_rate``, with values
    as the CLI takes them (``nosync``, ``300``, ``2 d``, ``10 MiB/s``;
    :func:`cinder_zfs_vault.attributes.parse_volume`). Keys without the
    prefix (``volume_backend_name``, ``capabilities:...``, other drivers'
    scopes) are Cinder's or the scheduler's, and ignored here.

    :param volume_type: a Cinder ``VolumeType``, or None (no type).
    :returns: ``{attribute: typed value}``: sync_mode ``'sync'`` or
        ``'nosync'``, frequency in seconds, rates in bytes/second (0 is
        unlimited); ``{}`` when the type sets none.
    :raises cinder_zfs_vault.exception.InvalidInput: an unknown
        ``zfs_vault:`` key or a bad value, naming the type and the spec.
        It only reads: callers validate before any command runs.
    """
    raw = _type_specs(volume_type)
    where = 'volume type %s' % (volume_type.name if volume_type else None)
    unknown = sorted(set(raw) - set(TYPE_ATTRIBUTES))
    if unknown:
        raise exception.InvalidInput(
            '%s: unknown extra spec %s (known: %s)' % (
                where, ', '.join(SPEC_PREFIX + n for n in unknown),
                ', '.join(SPEC_PREFIX + n for n in TYPE_ATTRIBUTES)))
    typed = {}
    for name, value in sorted(raw.items()):
        try:
            typed.update(attributes.parse_volume(**{name: value}))
        except exception.InvalidInput as e:
            raise exception.InvalidInput('%s: extra spec %s%s: %s' % (
                where, SPEC_PREFIX, name, e.message))
    return typed


def _attachment_host(attachment):
    """The host a Cinder attachment is on, or None (only reserved yet)."""
    return (attachment.get('connector', None) or {}).get('host') or \
        attachment.get('attached_host', None)


@interface.volumedriver
class ZFSVaultDriver(driver.VolumeDriver):
    """Volumes as ZFS zvols in a vault, exported over iSCSI.

    Implements Cinder's ``VolumeDriverCore`` with snapshots, O(1) clones,
    extend (online), revert to snapshot, manage/unmanage, image copy, and
    volume types whose ``zfs_vault:`` extra specs set a volume's
    attributes at create and at retype (in place).
    """

    VERSION = '1.0.0'
    CI_WIKI_NAME = 'cinder-zfs-vault-CI'

    def __init__(self, *args, **kwargs):
        super(ZFSVaultDriver, self).__init__(*args, **kwargs)
        self.configuration.append_config_values(opts.zfs_vault_opts)
        self.backend_name = (self.configuration.safe_get('volume_backend_name')
                             or 'ZFSVault')
        self.vault = None
        self.target_driver = None
        #: vault_host.agents.Agents, or None: every attachment is iSCSI.
        self.agents = None
        #: volume id -> host: create_export chose a local replica for the
        #: initialize_connection that follows it (Cinder's manager calls
        #: both in one attachment_update).
        self._local = {}
        self.protocol = 'iSCSI'
        self._stats = {}

    @classmethod
    def get_driver_options(cls):
        return opts.zfs_vault_opts

    # -- setup --------------------------------------------------------------

    def _zfs_executor(self, timeout):
        """How the driver runs ``zfs``: as root itself, or through privsep.

        Unprivileged (packaged Cinder's user), each command goes to the
        driver's privsep daemon, which runs what the installed rootwrap
        filters admit (vault_host/privileged.py); as root (the lab's driver
        tests, a root cinder-volume) it runs them itself, as processutils
        skips the root helper for root.
        """
        if _unprivileged():
            return privileged.ZFSExecutor(timeout)
        return executors.LocalExecutor(execute=self._execute,
                                       timeout=timeout)

    def do_setup(self, context):
        """Build the core over this host's executor and target helper.

        cinder-volume runs on the vault host, beside its pool, as Cinder's
        LVM driver runs beside its volume group: the zvols, LIO's targets
        and the leases' lock all live there.
        :raises InvalidConfigurationValue: an option the core refuses, or
            ``zfs_vault_ssh_host`` (a remote vault: exports would be made
            on the wrong host).
        """
        conf = self.configuration
        if conf.zfs_vault_ssh_host:
            raise cinder_exception.InvalidConfigurationValue(
                'zfs_vault_ssh_host = %s: cinder-volume with this driver '
                'must run on the vault host (its target helper exports the '
                'zvols from there); unset it and run cinder-volume on %s'
                % (conf.zfs_vault_ssh_host, conf.zfs_vault_ssh_host))
        try:
            self.vault = vault.Vault(
                zfs.ZFS(self._zfs_executor(conf.zfs_vault_command_timeout)),
                conf.zfs_vault_dataset,
                sparse=conf.zfs_vault_sparse,
                volblocksize=conf.zfs_vault_volblocksize,
                compression=conf.zfs_vault_compression)
        except exception.InvalidInput as e:
            raise cinder_exception.InvalidConfigurationValue(e.message)
        self.target_driver = target_helper(conf.zfs_vault_target_helper,
                                           conf, self._execute)
        self.agents = None
        if conf.zfs_vault_local_attach:
            url = conf.zfs_vault_agent_transport_url
            transport = rpc.transport(cfg.CONF, url=url or None)
            if transport is None:
                LOG.warning('No [DEFAULT] transport_url: no agent can be '
                            'called, every volume attaches over iSCSI.')
            else:
                if not url:
                    LOG.warning('No zfs_vault_agent_transport_url: the '
                                'agents are called on Cinder\'s own message '
                                'bus, whose account every compute host '
                                'would then hold (it can send '
                                'cinder-volume\'s RPCs). Give the agents a '
                                'virtual host and an account of their own.')
                self.agents = agentlib.Agents(
                    transport, conf.zfs_vault_agent_ping_timeout,
                    conf.zfs_vault_agent_attach_timeout,
                    conf.zfs_vault_agent_detach_timeout)

    def _authority(self):
        """The vault's lease changes (grant, revoke, break), as root.

        cinder-volume runs as Cinder's user; these run in this project's
        privsep daemon (vault_host/privileged.py), over the lease locks of
        the endpoint server (``zfs_vault_state_path``): a sync of a fenced
        host cannot land across a break.
        """
        conf = self.configuration
        return privileged.VaultAuthority(
            self.vault.root, conf.zfs_vault_state_path,
            conf.target_ip_address, conf.target_port,
            conf.zfs_vault_command_timeout)

    def check_for_setup_error(self):
        """The root dataset must exist (``zfs get``)."""
        try:
            self.vault.zfs.get(self.vault.root, ('type',))
        except exception.ZFSVaultError as e:
            raise cinder_exception.VolumeBackendAPIException(
                data='ZFS vault dataset %s is not usable: %s'
                % (self.vault.root, e.message))

    # -- stats --------------------------------------------------------------

    def _update_volume_stats(self):
        with _cinder_errors('stats of %s' % self.vault.root):
            stats = self.vault.stats()
        conf = self.configuration
        pool = {
            'pool_name': self.vault.root,
            'total_capacity_gb': round(stats.total / units.Gi, 2),
            'free_capacity_gb': round(stats.free / units.Gi, 2),
            'provisioned_capacity_gb': round(stats.provisioned / units.Gi, 2),
            'total_volumes': stats.volumes,
            'reserved_percentage': conf.reserved_percentage,
            'max_over_subscription_ratio': conf.max_over_subscription_ratio,
            'thin_provisioning_support': self.vault.sparse,
            'thick_provisioning_support': not self.vault.sparse,
            # An attached volume may be out on a compute host, whose
            # device would not grow (nor would nova's 'local' volume
            # driver extend it): with local replicas, Cinder's scheduler
            # refuses an extend of an attached volume, and the volume
            # stays as it was (issue 21, 12); over iSCSI only, it grows.
            'online_extend_support': self.agents is None,
            'multiattach': True,
            'QoS_support': False,
            'location_info': 'ZFSVaultDriver:%s' % self.vault.root,
            'backend_state': 'up',
        }
        self._stats = {
            'volume_backend_name': self.backend_name,
            'vendor_name': 'Open Source',
            'driver_version': self.VERSION,
            'storage_protocol': self.protocol,
            'pools': [pool],
        }

    def get_volume_stats(self, refresh=False):
        """Backend stats with one pool (the root dataset), sizes in GiB."""
        if refresh or not self._stats:
            self._update_volume_stats()
        return self._stats

    # -- volumes ------------------------------------------------------------

    def local_path(self, volume):
        return self.vault.device_path(volume.name)

    def create_volume(self, volume):
        """A zvol of ``volume.size`` GiB with its type's attributes.

        :raises InvalidInput: a bad ``zfs_vault:`` spec in the volume's type
            (:func:`type_attributes`; nothing ran, no zvol is made).
        """
        with _cinder_errors(volume.name):
            values = type_attributes(volume.volume_type)
            self.vault.create_volume(volume.name, volume.size)
            self._set_new_attributes(volume, values, self._undo_create)

    def delete_volume(self, volume):
        """Destroy the zvol (vault_host.volumes.Vault.delete_volume).

        A disk left out on a host by an abandoned attach is returned
        first (:meth:`_reclaim`).
        """
        with _cinder_errors(volume.name):
            self._reclaim(volume)
            self.vault.delete_volume(volume.name)

    def extend_volume(self, volume, new_size):
        """``zfs set volsize``; the target helper is told.

        Online (an attached volume) only without local replicas
        (``online_extend_support``, which Cinder's scheduler checks).
        :raises InvalidVolume: the volume is out on a compute host (an
            extend that reached the driver anyway); nothing changed.
        """
        with _cinder_errors(volume.name):
            self.vault.check_unleased(volume.name, 'an extend')
            self.vault.extend(volume.name, new_size)
        self.target_driver.extend_target(volume)

    def create_snapshot(self, snapshot):
        """``<zvol>@<snapshot.name>``, current even while attached.

        A volume out on a compute host with a local replica (its newest
        writes are there): its agent takes a sync point now, the vault
        confirms it by GUID, and that sync point is kept as the snapshot
        (Vault.keep_sync_point): every write the VM made before the call,
        with no stale zvol snapshotted (issue 9, "Operations on a leased
        volume"). A disk still seeding is seeded (unthrottled) and cut over
        first: the snapshot stays ``creating`` meanwhile, for at most
        ``zfs_vault_agent_detach_timeout``. Otherwise ``zfs snapshot`` of
        the zvol.
        :raises InvalidVolume: out on a host whose agent this driver cannot
            call (no ``transport_url``), or fenced.
        :raises VolumeBackendAPIException: the agent did not answer in
            time; no snapshot is kept (a sync point it landed late is the
            replica's), a retry is safe.
        """
        with _cinder_errors(snapshot.name):
            name = snapshot.volume_name
            owner, mode = self.vault.holder(name)
            if owner is None or mode == 'nosync':
                # In the vault, or written there by its VM (non-sync mode):
                # the zvol is current.
                self.vault.create_snapshot(name, snapshot.name)
                return
            sync_point, guid = self._sync_point_now(
                name, owner, snapshot.volume.name_id, 'a snapshot')
            self.vault.keep_sync_point(name, sync_point, guid, snapshot.name)
            LOG.info('%s: sync point %s of %s kept as the snapshot.',
                     snapshot.name, sync_point, owner)

    def _sync_point_now(self, name, owner, name_id, what):
        """A sync point of volume ``name`` that ``owner``'s agent takes now.

        :returns: (sync point's snapshot name, its GUID as the vault
            confirmed it).
        :raises LeaseHeld: no agent to call (``what`` is refused).
        """
        if self.agents is None:
            raise self.vault.lease_held(name, owner, what)
        point = self.agents.sync(owner, name_id)
        return point['snapshot'].split('@')[-1], point['guid']

    def delete_snapshot(self, snapshot):
        with _cinder_errors(snapshot.name):
            self.vault.delete_snapshot(snapshot.volume_name, snapshot.name)

    def create_volume_from_snapshot(self, volume, snapshot):
        """An O(1) clone of the snapshot, with its own type's attributes.

        A clone takes none of its origin's (ZFS copies no local property).
        :raises InvalidInput: a bad ``zfs_vault:`` spec (nothing ran).
        """
        with _cinder_errors(volume.name):
            values = type_attributes(volume.volume_type)
            self.vault.clone_snapshot(snapshot.volume_name, snapshot.name,
                                      volume.name, volume.size)
            self._set_new_attributes(volume, values, self._undo_create)

    def create_cloned_volume(self, volume, src_vref):
        """An O(1) clone of ``src_vref`` now, with its own type's attributes.

        A source out on a compute host with a local replica is cloned from
        a sync point its agent takes now, as :meth:`create_snapshot` takes
        one: every write its VM made before the call. Cinder's backup of an
        in-use volume clones it so (``backup_use_temp_snapshot`` False).
        :raises InvalidInput: a bad ``zfs_vault:`` spec (nothing ran).
        :raises InvalidVolume: the source is out on a host whose agent this
            driver cannot call, or fenced.
        :raises VolumeBackendAPIException: the agent did not answer in
            time; no clone is made, a retry is safe.
        """
        with _cinder_errors(volume.name):
            values = type_attributes(volume.volume_type)
            owner, mode = self.vault.holder(src_vref.name)
            if owner is None or mode == 'nosync':
                self.vault.clone_volume(src_vref.name, volume.name,
                                        volume.size)
            else:
                self._clone_sync_point(volume, src_vref, owner)
            self._set_new_attributes(volume, values, self._undo_create)

    def _clone_sync_point(self, volume, src_vref, owner):
        sync_point, guid = self._sync_point_now(
            src_vref.name, owner, src_vref.name_id, 'a clone')
        self.vault.clone_sync_point(src_vref.name, sync_point, guid,
                                    volume.name, volume.size)
        LOG.info('%s: cloned from sync point %s of %s.', volume.name,
                 sync_point, owner)

    def revert_to_snapshot(self, context, volume, snapshot):
        with _cinder_errors(volume.name):
            self.vault.check_unleased(volume.name, 'a revert')
            self.vault.revert(volume.name, snapshot.name, volume.size)

    def snapshot_revert_use_temp_snapshot(self):
        """No temporary snapshot around a revert (Cinder's BaseVD hook).

        ``zfs rollback`` is atomic (one transaction group): there is
        nothing half-reverted to restore. A temporary snapshot would also
        be newer than the one reverted to, which a rollback must destroy
        (``zfs-rollback(8)``) and which the revert refuses to.
        """
        return False

    # -- manage / unmanage --------------------------------------------------

    @staticmethod
    def _source_name(volume, existing_ref):
        """The zvol ``existing_ref`` names, if no other volume has it.

        :raises ManageExistingInvalidReference: no ``source-name``.
        :raises ManageExistingAlreadyManaged: it is another Cinder volume's
            zvol (``volume-<id>`` of a volume in Cinder's database), as the
            LVM driver refuses.
        """
        name = (existing_ref or {}).get('source-name')
        if not name:
            raise cinder_exception.ManageExistingInvalidReference(
                existing_ref=existing_ref,
                reason='source-name (the zvol name) is required')
        other = volume_utils.extract_id_from_volume_name(
            str(name).split('/')[-1])
        if other and other != volume.id and \
                volume_utils.check_already_managed_volume(other):
            raise cinder_exception.ManageExistingAlreadyManaged(
                volume_ref=name)
        return name

    def manage_existing_get_size(self, volume, existing_ref):
        name = self._source_name(volume, existing_ref)
        try:
            return self.vault.manageable_size_gib(name)
        except exception.ZFSVaultError as e:
            raise cinder_exception.ManageExistingInvalidReference(
                existing_ref=existing_ref, reason=e.message)

    def manage_existing(self, volume, existing_ref):
        """Rename the zvol to ``volume-<id>``; its data is untouched.

        The volume's type then sets its attributes; should that fail, the
        zvol gets its old name back.
        :raises InvalidInput: a bad ``zfs_vault:`` spec (nothing ran).
        """
        name = self._source_name(volume, existing_ref)
        with _cinder_errors(volume.name):
            values = type_attributes(volume.volume_type)
        try:
            self.vault.manage(name, volume.name)
        except (exception.InvalidInput, exception.NotFound) as e:
            raise cinder_exception.ManageExistingInvalidReference(
                existing_ref=existing_ref, reason=e.message)
        except exception.ZFSVaultError as e:
            raise cinder_exception.VolumeBackendAPIException(data=e.message)
        with _cinder_errors(volume.name):
            self._set_new_attributes(
                volume, values,
                lambda v: self.vault.manage(v.name, name.split('/')[-1]))

    def unmanage(self, volume):
        """Forget the volume; the zvol stays in the pool under its name.

        As the LVM driver does.
        """
        LOG.info('Unmanaged %s; the zvol %s stays.', volume.id,
                 self.vault.path(volume.name))

    def get_manageable_volumes(self, cinder_volumes, marker, limit, offset,
                               sort_keys, sort_dirs):
        cinder_ids = {v['id'] for v in cinder_volumes}
        entries = []
        with _cinder_errors('manageable volumes'):
            zvols = self.vault.manageable()
        for zvol in zvols:
            cinder_id = volume_utils.extract_id_from_volume_name(zvol.name)
            managed = cinder_id in cinder_ids
            entries.append({
                'reference': {'source-name': zvol.name},
                'size': int(math.ceil(zvol.size / float(units.Gi))),
                'cinder_id': cinder_id if managed else None,
                'safe_to_manage': not managed,
                'reason_not_safe': 'already managed' if managed else None,
                'extra_info': 'origin %s' % zvol.origin if zvol.origin
                else None,
            })
        return volume_utils.paginate_entries_list(
            entries, marker, limit, offset, sort_keys, sort_dirs)

    # -- volume types -------------------------------------------------------

    def _attributes(self):
        return attributes.Attributes(self.vault.zfs, self.vault.root)

    def _undo_create(self, volume):
        self.vault.delete_volume(volume.name)

    def _set_new_attributes(self, volume, values, undo):
        """Set a volume's type attributes just after it was made.

        One ``zfs set`` of ``values`` (from :func:`type_attributes`). If it
        fails, ``undo(volume)`` takes the volume away again (its own
        failure is logged) and the set's error is raised: a create makes
        the volume with its type's attributes or leaves nothing behind.
        """
        if not values:
            return
        try:
            self._attributes().set_volume(self.vault.path(volume.name),
                                          **values)
        except Exception:
            try:
                undo(volume)
            except Exception as e:
                LOG.error('Could not undo %s after its type attributes '
                          'failed: %s', volume.name, e)
            raise

    def retype(self, context, volume, new_type, diff, host):
        """Change a volume's type in place: its ``zfs_vault:`` attributes.

        Cinder's ``VolumeDriverCore.retype``, which the volume manager
        calls for a host of the volume's own backend. The new type's
        attributes are set (one ``zfs set``) and those the old type set
        and the new one lacks are removed (``zfs inherit``: the vault's
        value or the default applies again). Other specs need nothing of
        the zvol. A leased volume takes new attributes (the vault holds
        them and its agent reads them at each sync) but not a new sync
        mode.

        :param new_type: the target ``VolumeType``; ``volume.volume_type``
            is still the old one.
        :param host: the scheduler's ``{'host': 'host@backend#pool', ...}``.
        :returns: True when done; False for a host of another backend (the
            manager migrates, if the retype's policy allows).
        :raises InvalidInput: an unknown ``zfs_vault:`` spec or a bad value
            in the new type. :raises InvalidVolume: the sync mode would
            change while the volume is out on a compute host (the message
            names it). Either is raised before any change; the manager
            logs it and, with ``migration_policy = never``, leaves the
            volume in its status with its old type.
        """
        if (volume_utils.extract_host(host['host'], 'backend') !=
                volume_utils.extract_host(volume.host, 'backend')):
            LOG.info('Retype of %s to %s: another backend, not in place.',
                     volume.id, host['host'])
            return False
        with _cinder_errors(volume.name):
            new = type_attributes(new_type)
            gone = sorted(n for n in _type_specs(volume.volume_type)
                          if n in TYPE_ATTRIBUTES and n not in new)
            path = self.vault.path(volume.name)
            attrs = self._attributes()
            if 'sync_mode' in new or 'sync_mode' in gone:
                mode = new.get('sync_mode', attributes.DEFAULT_SYNC_MODE)
                if attrs.volume(path).sync_mode != mode:
                    self.vault.check_unleased(volume.name,
                                              'a change of sync mode')
            if new:
                attrs.set_volume(path, **new)
            if gone:
                attrs.unset_volume(path, *gone)
        LOG.info('Retyped %s to %s: set %s, removed %s.', volume.id,
                 new_type.name, new, gone)
        return True

    # -- images -------------------------------------------------------------

    def copy_image_to_volume(self, context, volume, image_service, image_id,
                             disable_sparse=False):
        """Write the image onto the zvol's device, on the vault host."""
        image_utils.fetch_to_raw(context, image_service, image_id,
                                 self.local_path(volume),
                                 self.configuration.volume_dd_blocksize,
                                 size=volume.size,
                                 disable_sparse=disable_sparse)

    def copy_volume_to_image(self, context, volume, image_service,
                             image_meta):
        """Upload the zvol as an image, from the vault host.

        :raises InvalidVolume: the volume is out on a compute host
            through a local replica (Cinder's ``enable_force_upload`` of an
            in-use volume): the zvol lacks the VM's newest writes. Nothing
            ran; a volume made from a snapshot of it (which takes a sync
            point now) can be uploaded.
        """
        with _cinder_errors(volume.name):
            self.vault.check_unleased(volume.name, 'an image upload',
                                      replica_only=True)
        volume_utils.upload_volume(context, image_service, image_meta,
                                   self.local_path(volume), volume)

    # -- exports (Cinder target helpers) ------------------------------------

    def create_export(self, context, volume, connector):
        """Export the zvol over iSCSI, unless it goes to a local replica.

        A volume that ``connector``'s host takes as a local replica
        (:meth:`_replica_host`) gets no export here: the vault exports its
        read-only origin to that host instead, and LIO lets one device
        back one storage object only.
        :returns: ``provider_location`` and ``provider_auth`` (CHAP) for
            Cinder to store; None for a local replica.
        """
        with _cinder_errors(volume.name):
            host = self._replica_host(volume, connector)
        if host is not None:
            self._local[volume.id] = host
            return None
        self._local.pop(volume.id, None)
        export = self.target_driver.create_export(
            context, volume, self.local_path(volume))
        return {'provider_location': export['location'],
                'provider_auth': export['auth']}

    def ensure_export(self, context, volume):
        """Recreate the export after a restart.

        LIO restores its saved configuration; tgt rereads its target file.
        A volume out on a compute host has none: its origin export is the
        vault endpoint's, which restores it (Authority.restore_exports).
        """
        with _cinder_errors(volume.name):
            if self.vault.holder(volume.name)[0] is not None:
                return None
        return self.target_driver.ensure_export(
            context, volume, self.local_path(volume))

    def create_export_snapshot(self, context, snapshot, connector):
        raise NotImplementedError()

    def remove_export(self, context, volume):
        """Remove the iSCSI export; a local replica's detach had none.

        (With LIO; tgt's helper tolerates a missing target.)
        """
        if self.configuration.zfs_vault_target_helper == 'lioadm' and \
                not privileged.target_exists(self._target_iqn(volume)):
            return
        self.target_driver.remove_export(context, volume)

    def _target_iqn(self, volume):
        """The IQN Cinder's target helper gives ``volume``'s export."""
        return '%s%s' % (self.configuration.target_prefix, volume.name)

    def remove_export_snapshot(self, context, snapshot):
        raise NotImplementedError()

    def validate_connector(self, connector):
        return self.target_driver.validate_connector(connector)

    def initialize_connection(self, volume, connector, initiator_data=None):
        """A local replica on the connector's host, or an iSCSI connection.

        Local (:meth:`_replica_host`): the host's agent takes the lease,
        has the vault export the read-only origin to its initiator, and
        builds the device over it (DESIGN.md, "How OpenStack uses it", 1);
        the seed and cut-over follow in the background. Returns
        ``{'driver_volume_type': 'local', 'data': {'device_path':
        '/dev/mapper/zvault-<id>'}}``, what nova's libvirt driver puts in
        the domain XML as it is.
        iSCSI: the initiator gets an ACL with the volume's CHAP credentials
        (with LIO); ``driver_volume_type`` is ``'iscsi'``.
        :raises InvalidVolume: the volume is out on another host (or this
            host was fenced from it).
        :raises VolumeBackendAPIException: the agent did not answer the
            attach in ``zfs_vault_agent_attach_timeout`` seconds.
        """
        with _cinder_errors(volume.name):
            host = self._local.pop(volume.id) if volume.id in self._local \
                else self._replica_host(volume, connector)
            if host is not None:
                device = self._attach_local(volume, host)
                LOG.info('%s attached to %s through a local replica at %s.',
                         volume.name, host, device)
                return {'driver_volume_type': 'local',
                        'data': {'device_path': device}}
            self.vault.check_unleased(volume.name, 'an iSCSI export')
        return self.target_driver.initialize_connection(volume, connector)

    def _attach_local(self, volume, host):
        """Grant the disk to ``host`` on the vault; its agent attaches it.

        The grant is what the vault endpoint checks before it leases the
        disk to a host (DESIGN.md, "Who may ask for what"): Cinder attaches
        the volume there. An attach that fails takes its grant back; if
        the host took the lease meanwhile (a timeout: its agent's flow goes
        on), it is marked abandoned instead, and returns the disk before
        the volume goes elsewhere (:meth:`_reclaim`).
        :returns: the device path on ``host``.
        """
        authority = self._authority()
        authority.grant(volume.name_id, host)
        try:
            return self.agents.attach(host, volume.name_id)
        except Exception:
            with excutils.save_and_reraise_exception():
                # Cinder fails the attachment without its connector: no
                # detach follows. A host that took the lease all the same
                # is marked, and returns the disk before it goes elsewhere
                # (_reclaim).
                self._revoke(authority, volume, host, abandon=True)

    def _revoke(self, authority, volume, host, abandon=False):
        """Take ``host``'s grant of ``volume`` back; log why it stays."""
        try:
            authority.revoke(volume.name_id, host, abandon=abandon)
        except exception.ZFSVaultError as e:
            LOG.warning('%s: the grant of %s stays: %s', volume.name, host,
                        e.message)

    def _reclaim(self, volume, host=None):
        """Have the host of an abandoned attach return the disk.

        Past ``zfs_vault_agent_attach_timeout`` Cinder fails an attachment
        without storing its connector, so no detach follows, while the
        agent's attach may go on and lease the disk (issue 21, 8): Cinder
        shows the volume available, and a delete or an attach elsewhere
        were refused for ever. Before either, that host's agent returns the
        disk (its final sync: nothing it wrote is lost) and its grant goes.
        An attach again on that same host (``host``) takes it as it is.
        :raises AgentUnreachable: its agent did not answer (nothing
            changed; the refusal that follows says why).
        """
        if self.agents is None:
            return
        try:
            held = self.vault.lease(volume.name)
        except exception.NotFound:
            return  # already gone: a delete succeeds, an attach says why
        if held.owner is None or held.abandoned != held.owner or \
                held.owner == host:
            return
        LOG.warning('%s is still out on %s, whose attach Cinder gave up on: '
                    'its agent returns it first.', volume.name, held.owner)
        self._detach_local(volume, held.owner, held.owner)

    def _replica_host(self, volume, connector):
        """The host to give a local replica of ``volume``, or None (iSCSI).

        A volume in sync mode, not multiattach, free or already out on
        that host, attached to no other host (a second attachment, as a
        live migration's destination makes, would seed a replica from a
        zvol that the first host still writes over iSCSI: two writers),
        and the host's agent answers a ping.
        """
        host = (connector or {}).get('host')
        self._reclaim(volume, host)
        if self.agents is None or not host or volume.multiattach:
            return None
        owner, mode = self.vault.holder(volume.name)
        if mode != 'sync' or owner not in (None, host):
            return None
        others = {_attachment_host(a) for a in volume.volume_attachment or []}
        others -= {None, host}
        if others:
            LOG.info('%s is attached to %s too: %s gets it over iSCSI, not '
                     'through a local replica.', volume.name,
                     ', '.join(sorted(others)), host)
            return None
        return host if self.agents.alive(host) else None

    def terminate_connection(self, volume, connector, **kwargs):
        """Revoke the connector's access, or return the disk to the vault.

        A disk out on the connector's host (a local replica): that host's
        agent unmaps it, syncs it a last time unthrottled, the vault
        confirms the sync point by GUID, the replica goes and the lease is
        released (DESIGN.md, "How OpenStack uses it", 5), and the vault
        takes back that host's grant.
        ``connector=None`` (Cinder's force detach, a host that is gone)
        breaks the lease of a disk out on a host (fencing: its late syncs
        are refused), takes its grant back and logs the loss window; it
        revokes the iSCSI initiators that no attachment with a connector
        uses, and no other (:meth:`_revoke_unattached`).
        :returns: True when other attachments still use the export (as
            Cinder's LVM driver).
        :raises VolumeBackendAPIException: the agent did not answer in
            ``zfs_vault_agent_detach_timeout`` seconds, or the disk could
            not be returned: nothing is lost, the disk stays on its host
            and a retry of the detach is safe.
        :raises VolumeIsBusy: its device is still open on the host.
        :raises InvalidVolume: the disk is out on another host than the
            connector names (host names that must agree do not); nothing
            changed.
        """
        attachments = volume.volume_attachment or []
        host = (connector or {}).get('host')
        with _cinder_errors(volume.name):
            held = self.vault.lease(volume.name)
            if held.owner is not None and connector is None:
                self._fence(volume, held.owner)
            elif held.owner is not None:
                synced = self._detach_local(volume, held.owner, host)
                LOG.info('%s returned to the vault from %s: final sync '
                         'point %s.', volume.name, held.owner, synced)
                return len(attachments) > 1
            elif host in held.granted:
                # Granted, never leased: an attach that did not get as far.
                self._revoke(self._authority(), volume, host)
        if connector is None:
            self._revoke_unattached(volume, attachments)
            return len(attachments) > 1

        def same_host(attachment):
            return (attachment.connector and
                    self.target_driver.are_same_connector(
                        attachment.connector, connector))

        # Several attachments of a multiattach volume on one host share the
        # initiator's ACL: keep it until the last one goes (as LVM does).
        # (An attachment only reserved has no connector yet.)
        if volume.multiattach and sum(
                1 for a in attachments if same_host(a)) > 1:
            return True
        self.target_driver.terminate_connection(volume, connector, **kwargs)
        return len(attachments) > 1

    def _detach_local(self, volume, owner, host):
        """The agent of ``owner`` returns the disk; its grant goes.

        :raises LeaseHeld: the disk is out on another host than the
            connector's: the names that must agree do not (nova's
            ``[DEFAULT] host``, the agent's ``[zfs_vault_agent] host``,
            its endpoint key's ``--host``); nothing changed.
        :raises AgentUnreachable: no agent can be called (no
            ``transport_url``), or it did not answer.
        """
        if owner != host:
            raise lease.LeaseHeld(
                '%s is out on %s through a local replica, but the detach '
                'names host %s: nothing changed. Nova\'s [DEFAULT] host, '
                'the agent\'s [zfs_vault_agent] host and the --host of its '
                'vault endpoint key must be one name'
                % (volume.name, owner, host))
        if self.agents is None:
            raise agentlib.AgentUnreachable(
                'no [DEFAULT] transport_url: the agent of %s, which holds '
                'the disk, cannot be called to return it' % owner)
        synced = self.agents.detach(owner, volume.name_id)
        self._revoke(self._authority(), volume, owner)
        return synced

    def _fence(self, volume, owner):
        """Break ``owner``'s lease of a force-detached volume; log the loss.

        The vault keeps the disk as of its last confirmed sync point; the
        writes the host made after it stay on that host (an operator may
        recover them there: ``zfs-vault discard`` or ``allow``).
        """
        authority = self._authority()
        broken = authority.break_lease(volume.name_id)
        self._revoke(authority, volume, owner)
        ago = ('%d s before the break' % (time.time() - broken.synced_at)
               if broken.synced_at else 'never: no sync landed')
        LOG.warning('Force detach of %(vol)s: the lease of %(host)s is '
                    'broken (generation %(gen)d fenced). The vault holds the '
                    'disk as of its last sync point (%(guid)s, synced '
                    '%(ago)s); writes on %(host)s after it are not in the '
                    'vault.', {'vol': volume.name, 'host': owner,
                               'gen': broken.generation,
                               'guid': broken.synced_guid, 'ago': ago})

    def _revoke_unattached(self, volume, attachments):
        """Delete the LIO ACLs of initiators no attachment's connector has.

        tgt keeps no per-initiator ACL (CHAP alone admits): nothing to
        revoke there.
        """
        if (self.configuration.zfs_vault_target_helper != 'lioadm'
                or not volume.provider_location):
            return
        keep = {a.connector.get('initiator') for a in attachments
                if a.connector}
        iqn = volume.provider_location.split(' ')[1]
        for initiator in privileged.initiators(iqn):
            if initiator not in keep:
                LOG.info('Revoking %s from %s: no attachment uses it.',
                         initiator, iqn)
                self.target_driver.terminate_connection(
                    volume, {'initiator': initiator})
