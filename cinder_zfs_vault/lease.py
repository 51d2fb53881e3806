"""Leases on vault zvols: who may write a disk, under which generation.

The lease lives with the data, as ZFS user properties on the vault zvol
(Archipelago keeps its volume lock with the volume the same way):

* ``org.openstack.zfsvault:lease-owner``: host holding the disk, or unset;
* ``org.openstack.zfsvault:lease-generation``: bumped by every acquire and
  every break, never lowered;
* ``org.openstack.zfsvault:synced-guid``: GUID of the newest snapshot the
  vault has confirmed from the owner;
* ``org.openstack.zfsvault:fenced``: hosts whose lease was broken; they
  may not take the disk again until an operator allows it
  (:meth:`Leases.allow`), so a fenced host cannot boot its stale replica;
* ``org.openstack.zfsvault:granted``: hosts that may take the lease, as
  cinder-volume records them while Cinder attaches the volume to that host
  (or an operator grants it on the vault): the vault leases a disk to no
  other host, whatever the host asks (DESIGN.md, "Who may ask for what");
* ``org.openstack.zfsvault:lease-mode``: the sync mode the disk was leased
  in (``sync``: a local replica holds its newest writes; ``nosync``: the
  host writes the zvol itself), which says how fresh the zvol is whatever
  the ``sync_mode`` attribute says since;
* ``org.openstack.zfsvault:abandoned``: a host whose attach Cinder gave up
  on (it timed out) after that host took the lease: no detach will come
  for it, and the driver has that host return the disk before the volume
  is attached elsewhere or deleted.

Acquiring is idempotent for the same owner (a retry gets the same
generation). Breaking a lease (``unlock -f``) fences first: it bumps the
generation, so a late sync from the old owner, which carries the old
generation, is refused (:meth:`Leases.check`). Leases change only on the
vault host (the driver, the operator's CLI and the vault endpoint that
compute hosts go through), and every change of one volume's lease is
serialised by one lock there (``oslo_concurrency.lockutils``, external, in
one lock directory, with a timeout: locking.py), so acquire's read-then-set
cannot race.
"""

import collections
import time

from oslo_log import log as logging

from cinder_zfs_vault import attributes
from cinder_zfs_vault import exception
from cinder_zfs_vault import locking
from cinder_zfs_vault import validation

LOG = logging.getLogger(__name__)

NS = validation.PROPERTY_NAMESPACE + ':'
OWNER = NS + 'lease-owner'
GENERATION = NS + 'lease-generation'
SYNCED_GUID = NS + 'synced-guid'
SYNCED_AT = NS + 'synced-at'
FENCED = NS + 'fenced'
GRANTED = NS + 'granted'
MODE = NS + 'lease-mode'
ABANDONED = NS + 'abandoned'
PROPS = (OWNER, GENERATION, SYNCED_GUID, SYNCED_AT, FENCED, GRANTED, MODE,
         ABANDONED)

#: A lease as read from the zvol; generation 0 and owner None when unset;
#: fenced and granted are tuples of host names; mode is the sync mode it
#: was taken in (None when free, or taken before it was recorded);
#: abandoned the host whose attach Cinder gave up on, or None.
Lease = collections.namedtuple('Lease', 'owner generation synced_guid '
                                        'synced_at fenced granted mode '
                                        'abandoned')
#: The lease of a disk nobody ever leased.
FREE = Lease(None, 0, None, None, (), (), None, None)


class LeaseHeld(exception.ZFSVaultError):
    """Another host holds the lease."""


class Fenced(exception.ZFSVaultError):
    """The caller's generation is not the lease's: it was broken."""


class NotGranted(exception.ZFSVaultError):
    """Cinder has not attached the disk to the asking host."""


def validate_host(host):
    """Return ``host`` if it can own a lease, else raise InvalidInput.

    An RFC 1123 host name (:func:`cinder_zfs_vault.validation.host`).
    """
    return validation.host(host)


def _is_host(value):
    try:
        validate_host(value)
    except exception.InvalidInput:
        return False
    return True


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
    mode = props.get(MODE)
    abandoned = props.get(ABANDONED)
    return Lease(None if _unset(owner) else owner,
                 0 if _unset(gen) else int(gen),
                 None if _unset(guid) else guid,
                 None if _unset(at) else float(at),
                 _hosts(props.get(FENCED)), _hosts(props.get(GRANTED)),
                 None if _unset(mode) else mode,
                 None if _unset(abandoned) else abandoned)


def _hosts(value):
    """A comma-separated list of host names, as a tuple."""
    return () if _unset(value) else tuple(value.split(','))


class Leases(object):
    """Lease operations on zvols through a :class:`~cinder_zfs_vault.zfs.ZFS`.

    :param zfs: the vault's ZFS layer.
    :param lock_prefix: prefix of lockutils lock names.
    :param lock_timeout: seconds to wait for another change of the same
        lease before :class:`~cinder_zfs_vault.locking.LockTimeout`.
    :param lock_path: directory of the lock files; every process that
        changes leases on the vault host must use the same one
        (lockutils' ``lock_path`` option when None).
    """

    def __init__(self, zfs, lock_prefix='zfsvault-lease-', lock_timeout=60,
                 lock_path=None):
        self.zfs = zfs
        self._lock_prefix = lock_prefix
        self._lock_timeout = lock_timeout
        self._lock_path = lock_path

    def lock(self, dataset):
        """The lock every change of ``dataset``'s lease holds."""
        return locking.lock(self._lock_prefix + dataset.replace('/', '_'),
                            self._lock_timeout, lock_path=self._lock_path)

    def get(self, dataset):
        """The lease of ``dataset``. :raises NotFound."""
        return parse(self.zfs.get(dataset, PROPS))

    def acquire(self, dataset, host, mode=None, granted_only=False):
        """Take the lease for ``host``.

        The same host asking again gets the same generation back.

        :param mode: the disk's sync mode now (``sync`` or ``nosync``),
            recorded with the lease (:data:`MODE`).
        :param granted_only: refuse a host that is not granted the disk
            (:meth:`grant`): what the vault endpoint asks for every
            compute host.
        :returns: the :data:`Lease` held.
        :raises LeaseHeld: another host holds it (nothing changed).
        :raises Fenced: ``host`` was fenced from this disk and no operator
            has allowed it back (:meth:`allow`; nothing changed).
        :raises NotGranted: ``granted_only`` and Cinder has not attached
            the disk to ``host`` (nothing changed).
        """
        validate_host(host)
        with self.lock(dataset):
            lease = self.get(dataset)
            if granted_only and host not in lease.granted:
                raise NotGranted(
                    '%s is not attached to %s: the vault leases it only to '
                    'a host Cinder attaches it to (or that an operator '
                    'grants it to: zfs-vault grant VOLUME HOST)'
                    % (dataset, host))
            if lease.owner == host:
                return lease
            if lease.owner is not None:
                raise LeaseHeld('%s is leased to %s (generation %d)'
                                % (dataset, lease.owner, lease.generation))
            if host in lease.fenced:
                raise Fenced('%s: %s was fenced from this disk; an operator '
                             'must allow it back (zfs-vault allow VOLUME HOST)'
                             % (dataset, host))
            gen = lease.generation + 1
            props = {OWNER: host, GENERATION: gen}
            if mode is not None:
                if mode not in attributes.SYNC_MODES:
                    raise exception.InvalidInput('bad sync mode %r' % mode)
                props[MODE] = mode
            self.zfs.set(dataset, props)
            if mode is None and lease.mode is not None:
                self.zfs.inherit(dataset, MODE)  # not the last holder's
            LOG.info('Lease on %s taken by %s, generation %d.', dataset,
                     host, gen)
            return lease._replace(owner=host, generation=gen, mode=mode)

    def grant(self, dataset, host):
        """Let ``host`` take the lease: Cinder attaches the disk there.

        Idempotent; an abandoned attach of ``host`` is one no longer.
        :returns: the hosts granted now.
        """
        validate_host(host)
        with self.lock(dataset):
            lease = self.get(dataset)
            if lease.abandoned == host:
                # Attached there again: no longer abandoned.
                self.zfs.inherit(dataset, ABANDONED)
            if host in lease.granted:
                return lease.granted
            granted = tuple(h for h in lease.granted if _is_host(h)) + (host,)
            self.zfs.set(dataset, {GRANTED: ','.join(granted)})
            LOG.info('%s granted to %s.', dataset, host)
            return granted

    def revoke(self, dataset, host, abandon=False):
        """Take back ``host``'s grant: Cinder no longer attaches it there.

        Idempotent (no grant, no such volume: nothing to do). The mark of
        an abandoned attach (:data:`ABANDONED`) of ``host`` goes with it.
        :param abandon: Cinder gave up on this host's attach: if the host
            holds the lease nevertheless, mark it abandoned (its grant
            stays until it gives the disk back) instead of refusing.
        :returns: the hosts still granted.
        :raises LeaseHeld: ``host`` still holds the lease: its writes
            are there; it must give the disk back (detach) or be fenced
            (:meth:`break_lease`) first. Nothing changed but the mark.
        """
        validate_host(host)
        with self.lock(dataset):
            try:
                lease = self.get(dataset)
            except exception.NotFound:
                return ()
            if lease.owner == host:
                if abandon:
                    self.zfs.set(dataset, {ABANDONED: host})
                raise LeaseHeld(
                    '%s: %s holds its lease (generation %d): detach it or '
                    'break the lease before its grant goes'
                    % (dataset, host, lease.generation))
            if lease.abandoned == host:
                self.zfs.inherit(dataset, ABANDONED)
            rest = tuple(h for h in lease.granted if h != host)
            if len(rest) == len(lease.granted):
                return rest
            if rest:
                self.zfs.set(dataset, {GRANTED: ','.join(rest)})
            else:
                self.zfs.inherit(dataset, GRANTED)
            LOG.info('Grant of %s to %s revoked.', dataset, host)
            return rest

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
        with self.lock(dataset):
            self.check(dataset, host, generation)
            self.record_sync(dataset, guid)

    def record_sync(self, dataset, guid):
        """Record ``guid`` as synced now; the caller holds :meth:`lock`."""
        self.zfs.set(dataset, {SYNCED_GUID: guid,
                               SYNCED_AT: '%.3f' % time.time()})

    def allow(self, dataset, host):
        """An operator's word: ``host`` may take the disk again.

        Its old replica stays fenced: the generation it recorded is not
        the one a new lease gets.
        """
        validate_host(host)
        with self.lock(dataset):
            lease = self.get(dataset)
            rest = [h for h in lease.fenced if h != host]
            if len(rest) == len(lease.fenced):
                return
            if rest:
                self.zfs.set(dataset, {FENCED: ','.join(rest)})
            else:
                self.zfs.inherit(dataset, FENCED)

    def release(self, dataset, host, generation):
        """Give the lease up (after the final sync). Idempotent.

        :raises Fenced: it was broken meanwhile (the owner must not think
            its data is safe without knowing).
        """
        with self.lock(dataset):
            lease = self.get(dataset)
            if lease.owner is None and lease.generation == generation:
                return
            self.check(dataset, host, generation)
            self.zfs.inherit(dataset, OWNER)

    def break_lease(self, dataset, revoke=None):
        """Break the lease (``unlock -f``): fence the owner.

        Bumps the generation (the old owner's late syncs are refused) and
        records the old owner as fenced; then, still under the lock,
        ``revoke(dataset, lease)`` takes back what the old owner was given
        (its sync in flight, its origin export and session), and only then
        is the owner cleared: a revoke that fails raises with the owner
        still recorded, so the lease still shows held and a retry of the
        break (a force detach again) revokes again (issue 21, 6: the
        fenced host kept its export).

        :returns: the broken :data:`Lease` (who held it, as of which sync).
        """
        with self.lock(dataset):
            lease = self.get(dataset)
            props = {GENERATION: lease.generation + 1}
            # A name that is no host name was set by hand: no host can
            # take a lease under it, and it would not fit the list (comma
            # separated, printable). The break must not fail on it.
            fenced = tuple(h for h in lease.fenced if _is_host(h))
            if lease.owner not in fenced and _is_host(lease.owner):
                props[FENCED] = ','.join(fenced + (lease.owner,))
            self.zfs.set(dataset, props)
            if revoke is not None:
                revoke(dataset, lease)
            if lease.owner is not None:
                self.zfs.inherit(dataset, OWNER)
            LOG.warning('Lease on %s broken (was %s, generation %d).',
                        dataset, lease.owner, lease.generation)
            return lease
