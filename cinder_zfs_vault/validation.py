"""Validation of names, sizes and attributes, run before any command.

Everything a command line is built from passes through here first: a bad
value raises :class:`~cinder_zfs_vault.exception.InvalidInput` and nothing
runs. Dataset name rules follow ``zfs(8)`` ("Component names"); we are
stricter (no leading '-', '.' or ':') so that no name can look like an option.
"""

import re
import uuid

from cinder_zfs_vault import exception

#: Namespace of every user property the project writes (``zfsprops(7)``:
#: user property names contain a colon).
PROPERTY_NAMESPACE = 'org.openstack.zfsvault'

_COMPONENT = r'[A-Za-z0-9][A-Za-z0-9_.:+-]{0,199}'
_DATASET_RE = re.compile(r'^%s(/%s)*$' % (_COMPONENT, _COMPONENT))
_SNAPSHOT_RE = re.compile(r'^%s$' % _COMPONENT)
_USER_PROP_RE = re.compile(r'^%s:[a-z0-9][a-z0-9_.-]{0,63}$'
                           % re.escape(PROPERTY_NAMESPACE))
_MAX_NAME = 255  # ZFS_MAX_DATASET_NAME_LEN - 1

GiB = 1024 ** 3

#: ``volblocksize`` limits from ``zfsprops(7)``: a power of two, 512 B–128 KiB.
VOLBLOCKSIZES = tuple(2 ** n for n in range(9, 18))
#: ``compression`` values accepted by OpenZFS 2.1 (``zfsprops(7)``).
COMPRESSIONS = ('on', 'off', 'lzjb', 'gzip', 'gzip-1', 'gzip-2', 'gzip-3',
                'gzip-4', 'gzip-5', 'gzip-6', 'gzip-7', 'gzip-8', 'gzip-9',
                'zle', 'lz4', 'zstd', 'zstd-fast')
#: Largest size we accept for one volume: 1 PiB, in GiB.
MAX_SIZE_GIB = 1024 * 1024


def _invalid(what, value, why):
    raise exception.InvalidInput('invalid %s %r: %s' % (what, value, why))


def dataset(name):
    """Return ``name`` if it is a valid ZFS dataset name, else raise.

    :raises InvalidInput: empty, too long, or a character ZFS or we refuse.
    """
    if not isinstance(name, str) or not name:
        _invalid('dataset name', name, 'must be a non-empty string')
    if len(name) > _MAX_NAME or not _DATASET_RE.match(name):
        _invalid('dataset name', name,
                 'components must match %s, joined by "/"' % _COMPONENT)
    return name


def snapshot_name(name):
    """Return ``name`` if it is valid as the part after '@', else raise."""
    if not isinstance(name, str) or not _SNAPSHOT_RE.match(name or ''):
        _invalid('snapshot name', name, 'must match %s' % _COMPONENT)
    return name


def snapshot(full_name):
    """Validate ``dataset@snapshot`` and return it."""
    if not isinstance(full_name, str) or full_name.count('@') != 1:
        _invalid('snapshot', full_name, 'must be dataset@snapshot')
    ds, snap = full_name.split('@')
    dataset(ds)
    snapshot_name(snap)
    if len(full_name) > _MAX_NAME:
        _invalid('snapshot', full_name, 'longer than %d' % _MAX_NAME)
    return full_name


def dataset_or_snapshot(name):
    return snapshot(name) if '@' in str(name) else dataset(name)


def size_gib(size, what='size'):
    """Return ``size`` (GiB, a positive int) or raise.

    Cinder sizes are whole GiB; bools and floats with a fraction are refused.
    """
    if isinstance(size, bool) or not isinstance(size, int):
        if isinstance(size, float) and size.is_integer():
            size = int(size)
        else:
            _invalid(what, size, 'must be a whole number of GiB')
    if size < 1 or size > MAX_SIZE_GIB:
        _invalid(what, size, 'must be between 1 and %d GiB' % MAX_SIZE_GIB)
    return size


def volblocksize(value):
    """Return ``value`` (bytes) or raise unless a power of two 512–131072."""
    if value is None:
        return None
    if isinstance(value, bool) or value not in VOLBLOCKSIZES:
        _invalid('volblocksize', value,
                 'must be one of %s bytes'
                 % ', '.join(map(str, VOLBLOCKSIZES)))
    return value


def compression(value):
    """Return ``value`` or raise unless it is a ``compression`` ZFS accepts."""
    if value is None:
        return None
    if value not in COMPRESSIONS:
        _invalid('compression', value, 'must be one of %s' % ', '.join(
            COMPRESSIONS))
    return value


def user_property(name):
    """Validate a user property name within our namespace."""
    if not isinstance(name, str) or not _USER_PROP_RE.match(name):
        _invalid('user property', name,
                 'must be %s:<key>' % PROPERTY_NAMESPACE)
    return name


def property_value(value):
    """Validate a property value: printable, one line, at most 8 KiB."""
    value = str(value)
    if len(value) > 8191 or any(c in value for c in '\n\r\0'):
        _invalid('property value', value, 'must be one line under 8 KiB')
    return value


def volume_id(value):
    """Validate a Cinder volume or snapshot id (a UUID) and return it."""
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        _invalid('id', value, 'must be a UUID')


def volume_dataset(vault_root, value):
    """The vault zvol of a volume id: ``<vault_root>/volume-<id>``.

    DESIGN.md's name of a volume's zvol; both are validated.
    """
    return '%s/volume-%s' % (dataset(vault_root), volume_id(value))


def volume_id_in(name, prefix, suffixes=()):
    """The volume id in a zvol, dm device or IQN name, or None.

    ``volume_id_in('zvault-<id>-snap', 'zvault-', ('-snap',))`` is ``<id>``;
    a name that does not hold a valid id gives None.
    """
    if not name.startswith(prefix):
        return None
    name = name[len(prefix):]
    for suffix in suffixes:
        if name.endswith(suffix):
            name = name[:-len(suffix)]
    try:
        return volume_id(name)
    except exception.InvalidInput:
        return None


# iSCSI names, RFC 3720 section 3.2.6.3: iqn.yyyy-mm.reversed.domain[:id]
# or eui.<16 hex digits>; ASCII, no space, lower case in the domain part.
_INITIATOR_RE = re.compile(
    r'iqn\.\d{4}-\d{2}\.[a-z0-9][a-z0-9.-]*(:[A-Za-z0-9.:_-]{1,200})?'
    r'|eui\.[0-9A-Fa-f]{16}')


def initiator(value):
    """Return ``value`` if it is an iSCSI initiator name (IQN or EUI)."""
    if not isinstance(value, str) or len(value) > 223 or \
            not _INITIATOR_RE.fullmatch(value):
        _invalid('initiator', value, 'must be an IQN (iqn.yyyy-mm.domain'
                 '[:id]) or an EUI name (RFC 3720)')
    return value
