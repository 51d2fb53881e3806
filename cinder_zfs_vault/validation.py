"""Validation of names, sizes and attributes, run before any command.

Everything a command line is built from passes through here first: a bad
value raises :class:`~cinder_zfs_vault.exception.InvalidInput` and nothing
runs. Dataset name rules follow ``zfs(8)`` ("Component names"); we are
stricter (no leading '-', '.' or ':', no space) so that no name can look
like an option.

Every pattern is matched with ``re.fullmatch`` and spelled in ASCII
classes (``[0-9]``, never ``\\d`` or ``\\s``): ``$`` also matches before a
trailing newline, and ``\\d`` matches any Unicode digit. A refusal quotes
the value with :func:`ascii`, so a newline, a terminal escape or a
look-alike letter shows as ``\\n``, ``\\x1b``, ``\\u0430`` on one line.
"""

import re
import uuid

from cinder_zfs_vault import exception

#: Namespace of every user property the project writes (``zfsprops(7)``:
#: user property names contain a colon).
PROPERTY_NAMESPACE = 'org.openstack.zfsvault'

# zfs(8) component characters are alphanumerics, '_', '-', ':', '.' and
# space; we drop space and any leading punctuation.
_COMPONENT = r'[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}'
_DATASET_RE = re.compile(r'%s(/%s)*' % (_COMPONENT, _COMPONENT))
_SNAPSHOT_RE = re.compile(_COMPONENT)
_USER_PROP_RE = re.compile(r'%s:[a-z0-9][a-z0-9_.-]{0,63}'
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


def shown(value):
    """``value`` as a refusal quotes it: :func:`ascii`, cut at 80."""
    text = ascii(value)
    if len(text) > 80:
        text = text[:72] + '...'
        if isinstance(value, str):
            text += ' (%d characters)' % len(value)
    return text


def _invalid(what, value, why):
    raise exception.InvalidInput('invalid %s %s: %s'
                                 % (what, shown(value), why))


def _matching(what, value, regex, why, limit=None):
    """``value`` if it is a str that ``regex`` matches whole, else raise."""
    if not isinstance(value, str) or \
            (limit is not None and len(value) > limit) or \
            not regex.fullmatch(value):
        _invalid(what, value, why)
    return value


def dataset(name):
    """Return ``name`` if it is a valid ZFS dataset name, else raise.

    Components of ASCII letters, digits, '_', '.', ':' and '-', each
    starting with a letter or digit, joined by '/'; at most 255 characters
    (``zfs(8)``, "Component names").

    :raises InvalidInput: empty, too long, or a character ZFS or we refuse.
    """
    if not isinstance(name, str) or not name:
        _invalid('dataset name', name, 'must be a non-empty string')
    return _matching('dataset name', name, _DATASET_RE,
                     'components must match %s, joined by "/"' % _COMPONENT,
                     _MAX_NAME)


def snapshot_name(name):
    """Return ``name`` if it is valid as the part after '@', else raise.

    One component as in :func:`dataset`.
    """
    return _matching('snapshot name', name, _SNAPSHOT_RE,
                     'must match %s' % _COMPONENT)


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
    if isinstance(name, str) and '@' in name:
        return snapshot(name)
    return dataset(name)


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
    """Validate a user property name within our namespace.

    ``org.openstack.zfsvault:<key>``, the key in lower-case ASCII letters,
    digits, '_', '.' and '-' (``zfsprops(7)``, "User Properties").
    """
    return _matching('user property', name, _USER_PROP_RE,
                     'must be %s:<key>' % PROPERTY_NAMESPACE)


def property_value(value):
    """Validate a property value: printable, one line, under 8 KiB.

    ``zfs get -H`` separates its columns with tabs and its rows with
    newlines, so no control character may be part of a value we read back.
    """
    value = str(value)
    if len(value) > 8191 or not value.isprintable():
        _invalid('property value', value,
                 'must be printable, one line, under 8 KiB')
    return value


# A Cinder id as Cinder writes it: the canonical 8-4-4-4-12 hex form only
# (uuid.UUID also takes braces, a urn: prefix, no dashes, and non-ASCII
# digits through int()).
_UUID_RE = re.compile(r'[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}')


def volume_id(value):
    """Validate a Cinder volume or snapshot id and return it, lower case.

    The canonical UUID form (RFC 4122), ``8-4-4-4-12`` hex digits.
    """
    if isinstance(value, uuid.UUID):
        return str(value)
    return str(uuid.UUID(_matching('id', value, _UUID_RE, 'must be a UUID')))


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


# RFC 1123 section 2.1 (RFC 952 as amended): labels of letters, digits and
# '-', not starting or ending with '-', at most 63 characters, joined by
# '.'; at most 253 characters in all. ASCII only, so no option ('-o'),
# terminal escape or look-alike letter reaches a property or a listing.
_LABEL = r'[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?'
_HOST_RE = re.compile(r'%s(\.%s)*' % (_LABEL, _LABEL))


def host(value):
    """Return ``value`` if it is a host name (RFC 1123), else raise.

    The name a host holds leases under (``[zfs_vault_agent] host``, the
    ``--host`` of its key's forced command on the vault, ``zfs-vault lock
    --host``): ASCII letters, digits and '-' in dot-separated labels of at
    most 63, no label starting or ending with '-', 253 characters at most.
    """
    return _matching('host name', value, _HOST_RE,
                     'must be an RFC 1123 host name (letters, digits, '
                     '"-" and ".")', 253)


# iSCSI names, RFC 3720 section 3.2.6.3: "iqn." yyyy-mm "." the naming
# authority's reversed domain name, then optionally ":" and a string of
# its choosing; or "eui." and 16 hex digits; RFC 3980 adds "naa." and 16
# or 32 hex digits. The characters are those left after stringprep
# (RFC 3722): ASCII letters, digits, '-', '.' and ':' (upper case maps to
# lower, so it is accepted in the free part).
_DOMAIN = r'[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*'
_INITIATOR_RE = re.compile(
    r'iqn\.[0-9]{4}-(0[1-9]|1[0-2])\.%s(:[A-Za-z0-9.:-]+)?'
    r'|eui\.[0-9A-Fa-f]{16}'
    r'|naa\.([0-9A-Fa-f]{16}|[0-9A-Fa-f]{32})' % _DOMAIN)


def initiator(value):
    """Return ``value`` if it is an iSCSI initiator name, else raise.

    An IQN (``iqn.2004-10.org.example:compute-1``), an EUI
    (``eui.02004567A425678D``) or an NAA name (``naa.`` and 16 or 32 hex
    digits), at most 223 bytes (RFC 3720 section 3.2.6, RFC 3980).
    """
    return _matching('initiator', value, _INITIATOR_RE,
                     'must be an IQN (iqn.yyyy-mm.domain[:id]), an EUI '
                     'or an NAA name (RFC 3720)', 223)


_GENERATION_RE = re.compile(r'[0-9]{1,18}')


def generation(value):
    """A lease generation as a request carries it: ASCII digits -> int.

    At most 18 digits, so it fits the signed 64-bit integer ZFS keeps.
    """
    return int(_matching('generation', value, _GENERATION_RE,
                         'must be a whole number, at most 18 digits'))


_GUID_RE = re.compile(r'[0-9]{1,20}')


def guid(value):
    """A snapshot GUID as ``zfs get -Hp guid`` prints it, as a string.

    A 64-bit unsigned integer in decimal ASCII digits (an int is taken).
    """
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    _matching('GUID', value, _GUID_RE, 'must be a decimal 64-bit number')
    if int(value) >= 2 ** 64:
        _invalid('GUID', value, 'must be a decimal 64-bit number')
    return value


# libzfs's zfs_send_resume_token_to_nvlist(): "<version>-<checksum>-
# <packed length>-<packed nvlist>", the last three in lower-case hex.
_TOKEN_RE = re.compile(r'[0-9]{1,3}-[0-9a-f]{1,16}-[0-9a-f]{1,16}-[0-9a-f]+')


def resume_token(value):
    """A ``receive_resume_token`` (``zfs-send(8)`` ``-t``), else raise.

    As libzfs writes it: a version, a checksum, a length and the packed
    state, dash-separated, in digits and lower-case hex; under 8 KiB.
    """
    return _matching('resume token', value, _TOKEN_RE,
                     'must be a receive_resume_token of zfs', 8191)
