"""Leases on vault zvols: who may write a disk, under which generation.

The lease lives with the data, as ZFS user properties on the vault zvol
(Archipelago keeps its volume lock with the volume the same way):

* ``org.openstack.zfsvault:lease-owner``: host holding the disk, or unset;
* ``org.openstack.zfsvault:lease-generation``: bumped by every acquire and
  every break, never lowered;
* ``org.openstack.zfsvault:synced-guid``: GUID of the newest snapshot the
  vault has confirmed from the owner.

Acquiring is idempotent for the same owner (a retry gets the same
generation). Breaking a lease (``unlock -f``) fences first: it bumps the
generation, so a late sync from the old owner, which carries the old
generation, is refused (:meth:`Leases.check`). Changes to one volume's lease
are serialised by a lock (``oslo_concurrency.lockutils``, external so that
the agent and the CLI on one vault host agree, with a timeout: locking.py).
"""

import collections
import time

from oslo_log import log as logging

from cinder_zfs_vault import exception
from cinder_zfs_vault import locking
from cinder_zfs_vault import validation

LOG = logging.getLogger(__name__)

NS = validation.PROPERTY_NAMESPACE + ':'
OWNER = NS + 'lease-owner'
GENERATION = NS + 'lease-generation'
SYNCED_GUID = NS + 'synced-guid'
SYNCED_AT = NS + 'synced-at'
PROPS = (OWNER, GENERATION, SYNCED_GUID, SYNCED_AT)

#: A lease as read from the zvol; generation 0 and owner None when unset.
Lease = collections.namedtuple('Lease', 'owner generation synced_guid '
                                        'synced_at')


class LeaseHeld(exception.ZFSVaultError):
    """Another host holds the lease."""


class Fenced(exception.ZFSVaultError):
    """The caller's generation is not the lease's: it was broken."""


def validate_host(host):
    """Return ``host`` if it can own a lease, else raise InvalidInput."""
    if not isinstance(host, str) or not host or len(host) > 255 or \
            any(c.isspace() or c in ',@/' for c in host):
        raise exception.InvalidInput('invalid host name %r' % (host,))
    return host


def _unset(value):
    return value in (None, '', '-')


def parse(props):
    """The :data:`Lease` in ``props`` (zfs property name -> string value).

    Rows of ``zfs get`` or ``zfs list`` with the :data:`PROPS` columns.
    """
    owner = props.get(OWNER)
    gen = props.get(GENERATION)
    guid = props.get(SYNCED_GUID)
    at = props.get(SYNCED_AT)
    return Lease(None if _unset(owner) else owner,
                 0 if _unset(gen) else int(gen),
                 None if _unset(guid) else guid,
                 None if _unset(at) else float(at))


class Leases(object):
    """Lease operations on zvols through a :class:`~cinder_zfs_vault.zfs.ZFS`.

    :param zfs: the vault's ZFS layer.
    :param lock_prefix: prefix of lockutils lock names.
    :param lock_timeout: seconds to wait for another change of the same
        lease before :class:`~cinder_zfs_vault.locking.LockTimeout`.
    """

    def __init__(self, zfs, lock_prefix='zfsvault-lease-', lock_timeout=60):
        self.zfs = zfs
        self._lock_prefix = lock_prefix
        self._lock_timeout = lock_timeout

    def _lock(self, dataset):
        return locking.lock(self._lock_prefix + dataset.replace('/', '_'),
                            self._lock_timeout)

    def get(self, dataset):
        """The lease of ``dataset``. :raises NotFound."""
        return parse(self.zfs.get(dataset, PROPS))

    def acquire(self, dataset, host):
        """Take the lease for ``host``.

        The same host asking again gets the same generation back.

        :returns: the :data:`Lease` held.
        :raises LeaseHeld: another host holds it (nothing changed).
        """
        validate_host(host)
        with self._lock(dataset):
            lease = self.get(dataset)
            if lease.owner == host:
                return lease
            if lease.owner is not None:
                raise LeaseHeld('%s is leased to %s (generation %d)'
                                % (dataset, lease.owner, lease.generation))
            gen = lease.generation + 1
            self.zfs.set(dataset, {OWNER: host, GENERATION: gen})
            LOG.info('Lease on %s taken by %s, generation %d.', dataset,
                     host, gen)
            return lease._replace(owner=host, generation=gen)

    def check(self, dataset, host, generation):
        """Raise :class:`Fenced` unless ``host`` holds ``generation``."""
        lease = self.get(dataset)
        if lease.owner != host or lease.generation != generation:
            raise Fenced('%s: lease is %s/%d, caller %s/%d: refused'
                         % (dataset, lease.owner, lease.generation, host,
                            generation))
        return lease

    def confirm_sync(self, dataset, host, generation, guid):
        """Record ``guid`` as synced, if the caller still holds the lease."""
        with self._lock(dataset):
            self.check(dataset, host, generation)
            self.zfs.set(dataset, {SYNCED_GUID: guid,
                                   SYNCED_AT: '%.3f' % time.time()})

    def release(self, dataset, host, generation):
        """Give the lease up (after the final sync). Idempotent.

        :raises Fenced: it was broken meanwhile (the owner must not think
            its data is safe without knowing).
        """
        with self._lock(dataset):
            lease = self.get(dataset)
            if lease.owner is None and lease.generation == generation:
                return
            self.check(dataset, host, generation)
            self.zfs.inherit(dataset, OWNER)

    def break_lease(self, dataset):
        """Break the lease (``unlock -f``).

        Clears the owner and bumps the generation, which fences the old
        owner's late syncs.

        :returns: the broken :data:`Lease` (who held it, as of which sync).
        """
        with self._lock(dataset):
            lease = self.get(dataset)
            self.zfs.set(dataset, {GENERATION: lease.generation + 1})
            if lease.owner is not None:
                self.zfs.inherit(dataset, OWNER)
            LOG.warning('Lease on %s broken (was %s, generation %d).',
                        dataset, lease.owner, lease.generation)
            return lease
