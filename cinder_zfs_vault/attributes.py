"""Per-volume and vault-wide attributes: sync schedule, speeds, sync mode.

What img-storage kept per disk (frequency, next sync, upload and download
speed) and per vault (``img_sync_workers``), stored with the data as ZFS
user properties (DESIGN.md, "Names"): per volume on the vault zvol
``<vault_root>/volume-<id>``, vault-wide on ``<vault_root>`` itself.

==============  =======================================  ===================
attribute       ZFS property                             where, default
==============  =======================================  ===================
frequency       ``org.openstack.zfsvault:frequency``     volume, vault (300)
next_sync       ``org.openstack.zfsvault:next-sync``     volume (None)
upload_rate     ``org.openstack.zfsvault:upload-rate``   volume, vault (0)
download_rate   ``org.openstack.zfsvault:download-rate`` volume, vault (0)
sync_mode       ``org.openstack.zfsvault:sync-mode``     volume ('sync')
sync_workers    ``org.openstack.zfsvault:sync-workers``  vault (2)
==============  =======================================  ===================

Units: frequency in seconds between sync points (60 s to 7 days);
next_sync in epoch seconds (when the next sync point is due); rates in
bytes/second, 0 is unlimited; sync_workers is how many transfers (seeds and
syncs) may run at once. A volume's unset attribute takes the vault's value
(which ZFS also shows, as inherited from the vault root), else the default.

Values from users (the CLI) are strings; :func:`parse_volume` and
:func:`parse_vault` validate and convert them all before any command runs,
raising :class:`~cinder_zfs_vault.exception.InvalidInput` that names the
attribute. A string is at most 64 printable ASCII characters with no space
at either end (a space may separate a number from its unit: ``2 d``,
``10 MiB/s``); digits are ASCII digits.
"""

import collections
import re

from oslo_log import log as logging
from oslo_utils import strutils
from oslo_utils import timeutils

from cinder_zfs_vault import exception
from cinder_zfs_vault import validation

LOG = logging.getLogger(__name__)

NS = validation.PROPERTY_NAMESPACE + ':'
#: Attribute name -> ZFS user property.
PROPERTIES = {
    'frequency': NS + 'frequency',
    'next_sync': NS + 'next-sync',
    'upload_rate': NS + 'upload-rate',
    'download_rate': NS + 'download-rate',
    'sync_mode': NS + 'sync-mode',
    'sync_workers': NS + 'sync-workers',
}

VOLUME_ATTRIBUTES = ('frequency', 'next_sync', 'upload_rate',
                     'download_rate', 'sync_mode')
VAULT_ATTRIBUTES = ('sync_workers', 'frequency', 'upload_rate',
                    'download_rate')

#: Effective attributes of one volume; next_sync None means "due now".
VolumeAttributes = collections.namedtuple('VolumeAttributes',
                                          VOLUME_ATTRIBUTES)
#: Attributes of the vault (defaults of its volumes, transfer limit).
VaultAttributes = collections.namedtuple('VaultAttributes', VAULT_ATTRIBUTES)

VAULT_DEFAULTS = VaultAttributes(sync_workers=2, frequency=300,
                                 upload_rate=0, download_rate=0)
SYNC_MODES = ('sync', 'nosync')
DEFAULT_SYNC_MODE = 'sync'

MIN_FREQUENCY = 60
MAX_FREQUENCY = 7 * 86400
MIN_WORKERS = 1
MAX_WORKERS = 64
#: Rates fit a signed 64-bit integer, as ZFS numbers do.
MAX_RATE = 2 ** 63 - 1
#: 9999-12-31T23:59:59Z: a later next_sync is a typo, not a schedule.
MAX_EPOCH = 253402300799

_UNITS = {'': 1, 's': 1, 'm': 60, 'h': 3600, 'd': 86400}
# Matched whole and in ASCII classes: '$' lets a trailing newline through,
# '\d' takes any Unicode digit (and int() reads many of them).
_TEXT_RE = re.compile(r'[!-~]([ -~]{0,62}[!-~])?')
_DIGITS_RE = re.compile(r'[0-9]+')
_FREQUENCY_RE = re.compile(r'([0-9]+) ?([smhd]?)')
# A number and a unit of string_to_bytes ("MiB", "MB", "Mb"), or a bare
# binary prefix ("10M", "10Mi", "1.5G") that ZFS's own convention reads as
# MiB, GiB, ... (string_to_bytes wants a unit); "/s" may follow.
_RATE_RE = re.compile(r'([0-9]+(\.[0-9]+)?) ?([A-Za-z]{0,4})(/s)?')
_BARE_PREFIX_RE = re.compile(r'[kKMGTPE]i?')


def _invalid(name, value, why):
    raise exception.InvalidInput('invalid %s %s: %s'
                                 % (name, validation.shown(value), why))


def _text(name, value, why):
    """``value`` if it is a string a parser here may read, else raise."""
    if not _TEXT_RE.fullmatch(value):
        _invalid(name, value, why)
    return value


def _whole(name, value):
    """An int from an int or a string of digits (no bools, no floats)."""
    if isinstance(value, bool):
        _invalid(name, value, 'must be a whole number')
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _DIGITS_RE.fullmatch(
            _text(name, value, 'must be a whole number')):
        return int(value)
    _invalid(name, value, 'must be a whole number')


def _between(name, value, low, high, unit=''):
    if not low <= value <= high:
        _invalid(name, value, 'must be between %d and %d%s'
                 % (low, high, unit))
    return value


def parse_frequency(value, name='frequency'):
    """Seconds between sync points: ``300``, ``'300'``, ``'5m'``, ``'1h'``.

    Units s, m, h, d. :returns: int seconds, 60 to 7 days.
    """
    if isinstance(value, str):
        why = ('must be seconds, or a whole number with a unit s, m, h or '
               'd (e.g. 5m)')
        match = _FREQUENCY_RE.fullmatch(_text(name, value, why))
        if not match:
            _invalid(name, value, why)
        seconds = int(match.group(1)) * _UNITS[match.group(2)]
    else:
        seconds = _whole(name, value)
    return _between(name, seconds, MIN_FREQUENCY, MAX_FREQUENCY, ' seconds')


def parse_rate(value, name='rate'):
    """Bytes/second: ``0`` (unlimited), ``1048576``, ``'10M'``, ``'1.5GiB'``.

    Strings go through :func:`oslo_utils.strutils.string_to_bytes` (mixed
    units: ``MB`` is 10^6, ``MiB`` and a bare ``M`` are 2^20, ``Mb`` is
    megabits); a trailing ``/s`` is allowed. Fractions round up.
    :returns: int bytes/second.
    """
    why = 'must be bytes/second, e.g. 0 (unlimited), 1048576, 10M, 1.5GiB'
    if isinstance(value, str) and not _DIGITS_RE.fullmatch(value):
        match = _RATE_RE.fullmatch(_text(name, value, why))
        if not match:
            _invalid(name, value, why)
        number, unit = match.group(1), match.group(3)
        if _BARE_PREFIX_RE.fullmatch(unit):
            unit = unit[0].upper() + 'iB'
        try:
            rate = strutils.string_to_bytes(number + unit,
                                            unit_system='mixed',
                                            return_int=True)
        except ValueError:
            _invalid(name, value, why)
    else:
        rate = _whole(name, value)
    return _between(name, rate, 0, MAX_RATE, ' bytes/second')


def parse_next_sync(value, name='next_sync'):
    """When the next sync point is due.

    Epoch seconds (int, float or digits), an ISO-8601 time (UTC unless it
    says otherwise; :func:`oslo_utils.timeutils.parse_isotime`), or
    ``'now'`` (:func:`oslo_utils.timeutils.utcnow_ts`). A digits-only
    string is epoch seconds. :returns: int epoch seconds.
    """
    if isinstance(value, float) and not isinstance(value, bool):
        if value != value or value in (float('inf'), float('-inf')):
            _invalid(name, value, 'must be a time')
        seconds = int(value)
    elif isinstance(value, str) and value.lower() == 'now':
        seconds = int(timeutils.utcnow_ts())
    elif isinstance(value, str) and not _DIGITS_RE.fullmatch(value):
        why = 'must be epoch seconds, an ISO-8601 time or "now"'
        try:
            when = timeutils.parse_isotime(_text(name, value, why))
        except ValueError:
            _invalid(name, value, why)
        seconds = int(when.timestamp())
    else:
        seconds = _whole(name, value)
    return _between(name, seconds, 0, MAX_EPOCH, ' (epoch seconds)')


def parse_sync_mode(value, name='sync_mode'):
    """``'sync'`` or ``'nosync'``.

    sync: a local replica, synced back; nosync: plain read-write iSCSI to
    the vault, as for fixing an image (PRAGMA's "fix image" stage).
    """
    if value not in SYNC_MODES:
        _invalid(name, value, 'must be one of %s' % ', '.join(SYNC_MODES))
    return value


def parse_sync_workers(value, name='sync_workers'):
    """Transfers at once per vault: int 1 to 64."""
    return _between(name, _whole(name, value), MIN_WORKERS, MAX_WORKERS)


_PARSERS = {
    'frequency': parse_frequency,
    'next_sync': parse_next_sync,
    'upload_rate': parse_rate,
    'download_rate': parse_rate,
    'sync_mode': parse_sync_mode,
    'sync_workers': parse_sync_workers,
}


def _parse(kind, known, raw):
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise exception.InvalidInput(
            'unknown %s attribute %s (known: %s)'
            % (kind, ', '.join(map(repr, unknown)), ', '.join(known)))
    return {name: _PARSERS[name](value, name) for name, value in raw.items()}


def parse_volume(**raw):
    """Validate and convert per-volume attributes.

    :param raw: attribute name -> value (strings from a CLI, or typed).
    :returns: dict of typed values (see the module's table for units).
    :raises InvalidInput: an unknown name or a bad value, naming it.
    """
    return _parse('volume', VOLUME_ATTRIBUTES, raw)


def parse_vault(**raw):
    """Validate and convert vault attributes; as :func:`parse_volume`."""
    return _parse('vault', VAULT_ATTRIBUTES, raw)


def attribute_names(kind, known, names):
    """Attribute names checked against ``known``; dashes read as '_'.

    ``next-sync`` (as the CLI spells it) is ``next_sync``.
    :raises InvalidInput: an unknown name (nothing done).
    """
    names = [n.replace('-', '_') for n in names]
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise exception.InvalidInput(
            'unknown %s attribute %s (known: %s)'
            % (kind, ', '.join(map(repr, unknown)), ', '.join(known)))
    return names


class Attributes(object):
    """Read and write attributes on a vault through its ZFS layer.

    :param zfs: the vault's :class:`~cinder_zfs_vault.zfs.ZFS`.
    :param vault_root: the dataset holding the vault's zvols (``vault``).
    """

    def __init__(self, zfs, vault_root):
        self.zfs = zfs
        self.vault_root = validation.dataset(vault_root)

    def dataset(self, volume_id):
        """The vault zvol of ``volume_id``: ``<vault_root>/volume-<id>``."""
        return validation.volume_dataset(self.vault_root, volume_id)

    def _volume_dataset(self, dataset):
        """Refuse datasets outside the vault (and the vault root itself)."""
        validation.dataset(dataset)
        if not dataset.startswith(self.vault_root + '/'):
            raise exception.InvalidInput(
                'invalid volume %r: not a dataset in the vault %s'
                % (dataset, self.vault_root))
        return dataset

    # -- reading ------------------------------------------------------------

    @staticmethod
    def _decode(names, local, where):
        """Typed values of the ``names`` set in ``local`` ({prop: value}).

        A value someone set by hand that does not parse is logged and
        ignored (the default applies), so one bad property cannot stop the
        scheduler.
        """
        values = {}
        for name in names:
            raw = local.get(PROPERTIES[name])
            if raw is None:
                continue
            try:
                values[name] = _PARSERS[name](raw, name)
            except exception.InvalidInput as e:
                LOG.warning('%s: ignoring %s: %s', where, PROPERTIES[name],
                            e.message)
        return values

    def _vault_attributes(self, local):
        return VAULT_DEFAULTS._replace(
            **self._decode(VAULT_ATTRIBUTES, local, self.vault_root))

    def _effective(self, dataset, local, vault):
        own = self._decode(VOLUME_ATTRIBUTES, local, dataset)
        return VolumeAttributes(
            frequency=own.get('frequency', vault.frequency),
            next_sync=own.get('next_sync'),
            upload_rate=own.get('upload_rate', vault.upload_rate),
            download_rate=own.get('download_rate', vault.download_rate),
            sync_mode=own.get('sync_mode', DEFAULT_SYNC_MODE))

    def volume(self, dataset):
        """Effective attributes of a vault zvol, in one ``zfs get``.

        Unset values come from the vault, else the defaults; an unset
        next_sync is None (due now).
        :returns: :data:`VolumeAttributes`.
        :raises NotFound: no such dataset. :raises InvalidInput: a name
            outside the vault.
        """
        self._volume_dataset(dataset)
        local = self.zfs.get_local([dataset, self.vault_root],
                                   sorted(PROPERTIES.values()))
        vault = self._vault_attributes(local.get(self.vault_root, {}))
        return self._effective(dataset, local.get(dataset, {}), vault)

    def explicit(self, dataset):
        """Only the attributes set on the volume itself: {name: value}."""
        self._volume_dataset(dataset)
        local = self.zfs.get_local(
            [dataset], [PROPERTIES[n] for n in VOLUME_ATTRIBUTES])
        return self._decode(VOLUME_ATTRIBUTES, local.get(dataset, {}),
                            dataset)

    def vault(self):
        """Attributes of the vault, defaults filled in.

        :returns: :data:`VaultAttributes`.
        """
        local = self.zfs.get_local(
            [self.vault_root], [PROPERTIES[n] for n in VAULT_ATTRIBUTES])
        return self._vault_attributes(local.get(self.vault_root, {}))

    def explicit_vault(self):
        """Only the vault attributes set on the vault root: {name: value}."""
        local = self.zfs.get_local(
            [self.vault_root], [PROPERTIES[n] for n in VAULT_ATTRIBUTES])
        return self._decode(VAULT_ATTRIBUTES,
                            local.get(self.vault_root, {}), self.vault_root)

    def read_all(self):
        """The vault's and every zvol's attributes in one ``zfs get -d 1``.

        For a caller that looks at every volume at once (the scheduler's
        tick), one command instead of one per volume.
        :returns: (:data:`VaultAttributes`,
            {dataset: :data:`VolumeAttributes`}) for every dataset directly
            under the vault root.
        """
        return self.decode_all(self.zfs.get_local(
            [self.vault_root], sorted(PROPERTIES.values()), depth=1))

    def decode_all(self, local):
        """:meth:`read_all` of ``get_local`` rows read by the caller."""
        local = dict(local)
        vault = self._vault_attributes(local.pop(self.vault_root, {}))
        return vault, {ds: self._effective(ds, props, vault)
                       for ds, props in local.items()}

    # -- changing -----------------------------------------------------------

    def set_volume(self, dataset, **values):
        """Set attributes on a vault zvol in one ``zfs set``.

        Every name and value is validated first (:func:`parse_volume`).
        :raises InvalidInput: nothing ran. :raises NotFound: no such zvol.
        """
        self._volume_dataset(dataset)
        typed = parse_volume(**values)
        self.zfs.set(dataset, {PROPERTIES[n]: v for n, v in typed.items()})

    def unset_volume(self, dataset, *names):
        """Remove attributes from a vault zvol (``zfs inherit`` each).

        The volume then takes the vault's value (or the default).
        :raises InvalidInput: an unknown name (nothing ran).
        """
        self._volume_dataset(dataset)
        for name in attribute_names('volume', VOLUME_ATTRIBUTES, names):
            self.zfs.inherit(dataset, PROPERTIES[name])

    def set_vault(self, **values):
        """Set vault attributes on the vault root in one ``zfs set``."""
        typed = parse_vault(**values)
        self.zfs.set(self.vault_root,
                     {PROPERTIES[n]: v for n, v in typed.items()})

    def unset_vault(self, *names):
        """Back to the defaults (``zfs inherit`` on the vault root)."""
        for name in attribute_names('vault', VAULT_ATTRIBUTES, names):
            self.zfs.inherit(self.vault_root, PROPERTIES[name])
