"""``zfs-vault``: the operator's view of the vault and this host's replicas.

What img-storage's rocks commands and Archipelago's ``vlmc`` offered, on the
replica engine: list disks with their state, lease and sync lag; attach,
sync and detach a disk on this host; take, release or break a lease; show
the device-mapper devices of this host. Built on cliff: every command is an
entry point in the ``zfs_vault.cli`` namespace (``setup.cfg``), and every
listing takes cliff's ``-f json|yaml|csv|value|table``.

The configuration is the ``[zfs_vault_agent]`` group of the agent
(:mod:`cinder_zfs_vault.compute_host.agent`), read with oslo.config from
``--config-file`` (repeatable), or else from the usual places for the
project ``cinder-zfs-vault`` (``/etc/cinder-zfs-vault/cinder-zfs-vault.conf``
among them). The CLI runs as root: ``zfs``, ``dmsetup`` and LIO need it.

Refusals (a bad name, a missing volume, a lease held elsewhere) print one
line on stderr and exit 1 before anything changes.
"""

import datetime
import functools
import logging
import os
import sys
import time
import warnings

from cliff import app
from cliff import command
from cliff import commandmanager
from cliff import lister
from cliff import show
from oslo_config import cfg
from oslo_utils import fileutils

from cinder_zfs_vault import attributes as attrs
from cinder_zfs_vault.compute_host import agent
from cinder_zfs_vault import exception
from cinder_zfs_vault import lease as leaselib
from cinder_zfs_vault import opts
from cinder_zfs_vault import validation

NAMESPACE = 'zfs_vault.cli'
PROJECT = 'cinder-zfs-vault'
PROG = 'zfs-vault'
DM_PREFIX = 'zvault-'
VOLUME_PREFIX = 'volume-'

#: States of a disk as seen from this host (``list``, ``show``): the
#: engine's (``ReplicaEngine.state``, compute_host/replica.py: 'in
#: vault', 'seeding', 'local', 'direct', 'releasing'), 'syncing' while a
#: sync flow of this host is in its logbook, and 'remote' for a disk leased
#: to another host.
REMOTE = 'remote'
IN_VAULT = 'in vault'
#: A flow in this host's logbook (running, or left by a crash until the
#: agent resumes it) names the state better than the devices do.
FLOW_STATES = {'sync': 'syncing', 'detach': 'releasing'}


# -- what the commands run on ------------------------------------------------

class Backend(object):
    """The replica engine of this host and its orchestrator.

    Each is made on first use, so that a command that needs neither (or
    only the engine) opens no logbook.
    """

    def __init__(self, conf):
        self.conf = conf

    @functools.cached_property
    def engine(self):
        if os.geteuid() == 0:
            # As root, os-brick's privileged calls run in this process:
            # privsep-helper through sudo would only hand root back.
            from os_brick import privileged
            privileged.default.set_client_mode(False)
        agent.setup(self.conf)
        return agent.make_engine(self.conf)

    @functools.cached_property
    def vault(self):
        """The vault's Authority (vault_host/authority.py), on the vault.

        Built from this host's ``[zfs_vault_endpoint]`` options: listing
        every disk, taking and breaking leases and setting attributes are
        the vault operator's, done where the pool is. A compute host
        reaches the vault only through its endpoint.
        """
        if self.conf.zfs_vault_agent.zfs_vault_ssh_host:
            return EndpointVault(self.engine.vault,
                                 self.conf.zfs_vault_agent.vault_dataset)
        from cinder_zfs_vault import executor
        from cinder_zfs_vault.vault_host import authority
        from cinder_zfs_vault.vault_host import origin
        from cinder_zfs_vault import zfs
        group = self.conf.zfs_vault_endpoint
        return authority.Authority(
            zfs.ZFS(executor.LocalExecutor()),
            origin.OriginExporter(group.portal_ip, group.portal_port),
            group.vault_dataset, group.state_path)

    @functools.cached_property
    def orchestrator(self):
        from cinder_zfs_vault.compute_host import flows
        fileutils.ensure_tree(self.conf.zfs_vault_agent.state_path,
                              mode=0o700)
        return flows.Orchestrator(self.engine, agent.logbook_url(self.conf))


class ZFSVaultApp(app.App):
    """The cliff application ``zfs-vault``.

    :param conf: ``oslo_config.cfg.ConfigOpts`` to load (the global one by
        default: Cinder's SSH host key options and the lock path live
        there).
    :param command_manager: cliff ``CommandManager``; by default the
        commands of the ``zfs_vault.cli`` entry points.
    """

    NAME = PROG

    def __init__(self, conf=None, command_manager=None, stdin=None,
                 stdout=None, stderr=None):
        super(ZFSVaultApp, self).__init__(
            description=__doc__.splitlines()[0],
            version=_version(),
            command_manager=(command_manager
                             or commandmanager.CommandManager(NAMESPACE)),
            stdin=stdin, stdout=stdout, stderr=stderr,
            deferred_help=True)
        self.conf = conf if conf is not None else cfg.CONF
        self._backend = None
        self._log_handlers = []

    def build_option_parser(self, description, version,
                            argparse_kwargs=None):
        parser = super(ZFSVaultApp, self).build_option_parser(
            description, version, argparse_kwargs)
        parser.add_argument(
            '--config-file', action='append', default=[], metavar='PATH',
            help='oslo.config file with the [zfs_vault_agent] group '
                 '(repeatable). Default: cinder-zfs-vault.conf in the '
                 'usual places (/etc/cinder-zfs-vault/).')
        return parser

    def initialize_app(self, argv):
        agent.register_opts(self.conf)
        self.conf.register_opts(opts.endpoint_opts, group=opts.ENDPOINT_GROUP)
        self.conf([], project=PROJECT, prog=PROG,
                  default_config_files=self.options.config_file or None)

    def make_backend(self):
        """What the commands run on: ``.engine`` and ``.orchestrator``.

        The one factory of both; tests override it to inject fakes.
        """
        return Backend(self.conf)

    @property
    def backend(self):
        if self._backend is None:
            self._backend = self.make_backend()
        return self._backend

    @property
    def engine(self):
        return self.backend.engine

    @property
    def orchestrator(self):
        return self.backend.orchestrator

    @property
    def vault(self):
        return self.backend.vault

    @property
    def attributes(self):
        """:class:`~cinder_zfs_vault.attributes.Attributes` of the vault."""
        return self.vault.attributes

    def progress(self, label):
        """A progress bar on stderr, or None when stdout is not a terminal."""
        isatty = getattr(self.stdout, 'isatty', None)
        if not (isatty and isatty()):
            return None
        return ProgressBar(self.stderr, label)

    def configure_logging(self):
        root = logging.getLogger('')
        before = list(root.handlers)
        super(ZFSVaultApp, self).configure_logging()
        self._log_handlers = [h for h in root.handlers if h not in before]
        if self.options.verbose_level < 2:
            # cliff shows INFO by default: ours (leases taken, exports) is
            # for the operator; the libraries' (alembic, oslo.service,
            # os-brick) only with -vv or --debug.
            for handler in self._log_handlers:
                handler.addFilter(_OurInfo())

    def run(self, argv):
        try:
            return super(ZFSVaultApp, self).run(argv)
        finally:
            # Leave logging as it was: tests run the app many times in one
            # process, and each run adds cliff's console handler.
            for handler in self._log_handlers:
                logging.getLogger('').removeHandler(handler)
            self._log_handlers = []


class _OurInfo(logging.Filter):
    """Warnings and errors of anyone; below that, only this project's."""

    def filter(self, record):
        return (record.levelno >= logging.WARNING
                or record.name.startswith('cinder_zfs_vault'))


def _version():
    try:
        import pbr.version
        return pbr.version.VersionInfo(PROJECT).version_string()
    except Exception:  # a source tree that is not installed
        return 'unknown'


class ProgressBar(object):
    """``label  45% [#########-----------]  450 MiB/1.0 GiB  12 MiB/s``.

    Called as ``bar(bytes_done, bytes_expected)``; redrawn at most every
    ``interval`` seconds on one line of ``stream``. ``bytes_expected`` 0
    (a resumed stream, whose size is unknown) shows bytes and rate only.
    """

    WIDTH = 30

    def __init__(self, stream, label, interval=0.2, clock=time.monotonic):
        self.stream = stream
        self.label = label
        self.interval = interval
        self.clock = clock
        self.start = clock()
        self.drawn_at = None
        self.latest = None  # (done, expected, seconds) last reported
        self.shown = None  # ... and last drawn
        self.width = 0

    def __call__(self, done, expected):
        now = self.clock()
        self.latest = (done, expected, now - self.start)
        if self.drawn_at is None or now - self.drawn_at >= self.interval:
            self.drawn_at = now
            self._draw()

    def _draw(self):
        text = self.line(*self.latest)
        # Pad over what a longer previous line left on the terminal.
        self.stream.write('\r' + text.ljust(self.width))
        self.stream.flush()
        self.width = len(text)
        self.shown = self.latest

    def line(self, done, expected, seconds):
        rate = '%s/s' % human_bytes(done / seconds if seconds > 0 else 0)
        if not expected:
            return '%s  %s  %s' % (self.label, human_bytes(done), rate)
        fraction = min(1.0, float(done) / expected)
        filled = int(fraction * self.WIDTH)
        return '%s %3d%% [%s%s]  %s/%s  %s' % (
            self.label, fraction * 100, '#' * filled,
            '-' * (self.WIDTH - filled), human_bytes(done),
            human_bytes(expected), rate)

    def finish(self):
        """Draw the last values reported, and end the line."""
        if self.latest is None:
            return
        if self.shown != self.latest:
            self._draw()
        self.stream.write('\n')
        self.stream.flush()


def human_bytes(n):
    """``1536`` -> ``'1.5 KiB'`` (binary units, as zfs prints sizes)."""
    for unit in ('B', 'KiB', 'MiB', 'GiB', 'TiB'):
        if abs(n) < 1024 or unit == 'TiB':
            return ('%d %s' if unit == 'B' else '%.1f %s') % (n, unit)
        n /= 1024.0


def timestamp(seconds):
    """Epoch seconds as ISO 8601 UTC (``2024-05-01T12:00:00Z``), or None."""
    if seconds is None:
        return None
    return datetime.datetime.fromtimestamp(
        seconds, datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')


# -- the vault's view of its disks --------------------------------------------

class EndpointVault(object):
    """The vault as a compute host's CLI sees it: through its endpoint.

    Only the disks this host holds are visible, and nothing on the vault
    can be changed from here: leases are taken by attach and given back
    by detach; breaking one or setting attributes is the vault operator's
    (``zfs-vault`` on the vault host).
    """

    def __init__(self, client, vault_root):
        self.client = client
        self.vault_root = vault_root

    def disks(self, volume_id=None):
        """This host's disks, as the vault has them (Authority.disks).

        A disk it does not hold is shown unleased, as far as it may know:
        an attach asks the vault, which refuses what it must.
        """
        disks = {}
        for vid, disk in self.client.disks().items():
            disk['lease'] = leaselib.Lease(**disk['lease'])
            disks[vid] = disk
        if volume_id is not None:
            dataset = validation.volume_dataset(self.vault_root, volume_id)
            return {volume_id: disks.get(volume_id) or {
                'dataset': dataset, 'size': None, 'last_sync': None,
                'lease': leaselib.Lease(None, 0, None, None, ())}}
        return disks

    def __getattr__(self, name):
        raise exception.InvalidInput(
            'this is a compute host: it reaches the vault only through '
            'its endpoint; run this command on the vault host')


def local_presence(engine):
    """Volume ids with a dm device or a zvol on this host (2 commands).

    The VM's device ``zvault-<id>`` and the ones stacked under it during a
    seed and cut-over (``-snap``, ``-merge``); the replica and its COW zvol.
    """
    present = set()
    for dev in engine.dm.devices(DM_PREFIX):
        present.add(validation.volume_id_in(dev['name'], DM_PREFIX,
                                            ('-snap', '-merge')))
    try:
        rows = engine.compute_zfs.list(engine.compute_root, depth=1)
    except exception.NotFound:  # a vault host without a compute pool
        rows = []
    for row in rows:
        present.add(validation.volume_id_in(
            row['name'].rpartition('/')[2], VOLUME_PREFIX, ('-cow',)))
    present.discard(None)
    return present


def disk_row(engine, volume_id, disk, here, now, flow=None):
    """The status of one disk as ``list`` and ``show`` print it.

    :param here: whether this host has a device or dataset of it; the
        engine is asked for the state only then (the others are in the
        vault as far as this host knows).
    :param flow: kind of this host's flow in flight on the disk, if any
        (Orchestrator.in_flight).
    :returns: dict of column name to value.
    """
    lease = disk['lease']
    if here:
        state = FLOW_STATES.get(flow, engine.state(volume_id))
    elif lease.owner not in (None, engine.host):
        state = REMOTE
    else:
        state = IN_VAULT
    unsynced = None
    if state in ('local', 'syncing', 'releasing'):
        unsynced = engine.unsynced_bytes(volume_id)
    lag = None
    if lease.owner is not None and disk['last_sync'] is not None:
        lag = max(0, int(now - disk['last_sync']))
    return {'Volume': volume_id, 'State': state, 'Lease owner': lease.owner,
            'Generation': lease.generation,
            'Last sync': timestamp(disk['last_sync']),
            'Synced GUID': lease.synced_guid, 'Lag (s)': lag,
            'Unsynced bytes': unsynced}


LIST_COLUMNS = ('Volume', 'State', 'Lease owner', 'Generation', 'Last sync',
                'Synced GUID', 'Lag (s)', 'Unsynced bytes')


def flows_in_flight(app):
    """{volume id: kind} of the flows in this host's logbook."""
    return {vid: kind for kind, vid, _state in app.orchestrator.in_flight()}


def find_disk(vault, volume_id):
    """Validate ``volume_id`` and read its disk; a clear NotFound if none.

    :returns: (normalised volume id, disk dict of Authority.disks).
    :raises InvalidInput: not a UUID (nothing ran).
    :raises NotFound: no such zvol in the vault.
    """
    volume_id = validation.volume_id(volume_id)
    try:
        disks = vault.disks(volume_id)
    except exception.NotFound:
        disks = {}
    if volume_id not in disks:
        raise exception.NotFound('volume %s is not in the vault (%s)'
                                 % (volume_id, vault.vault_root))
    return volume_id, disks[volume_id]


def refuse_if_leased_elsewhere(engine, volume_id, disk):
    owner = disk['lease'].owner
    if owner not in (None, engine.host):
        raise leaselib.LeaseHeld(
            'volume %s is leased to %s (generation %d); `zfs-vault unlock '
            '-f` breaks the lease' % (volume_id, owner,
                                      disk['lease'].generation))


# -- commands -----------------------------------------------------------------

class VolumeCommand(command.Command):
    """Base: a command on one volume (positional VOLUME, a UUID)."""

    def get_parser(self, prog_name):
        parser = super(VolumeCommand, self).get_parser(prog_name)
        parser.add_argument('volume', metavar='VOLUME',
                            help='volume id (UUID)')
        return parser


class ListDisks(lister.Lister):
    """List the disks in the vault with their state on this host.

    State: 'in vault', 'seeding' (the device runs on the iSCSI origin while
    the local copy fills), 'local' (on the local replica), 'direct'
    (non-sync mode: read-write on the vault over iSCSI), 'releasing' (a
    replica here without a device: a detach under way), 'syncing' (a sync
    flow of this host in flight), 'remote' (leased to another host). Last
    sync is the newest sync point in the vault; lag is seconds since then,
    for leased disks; unsynced bytes are written on this host's replica
    since that sync point.
    """

    def take_action(self, parsed_args):
        engine = self.app.engine
        disks = self.app.vault.disks()
        present = local_presence(engine)
        flows = flows_in_flight(self.app) if present else {}
        now = time.time()
        rows = []
        for vid in sorted(disks):
            row = disk_row(engine, vid, disks[vid], vid in present, now,
                           flows.get(vid))
            rows.append([row[c] for c in LIST_COLUMNS])
        return LIST_COLUMNS, rows


#: Columns of the attributes in ``show`` and ``vault show`` (units: seconds,
#: bytes/second with 0 unlimited, an ISO 8601 time or None for "due now").
ATTRIBUTE_COLUMNS = {'frequency': 'Frequency (s)', 'next_sync': 'Next sync',
                     'upload_rate': 'Upload rate (B/s)',
                     'download_rate': 'Download rate (B/s)',
                     'sync_mode': 'Sync mode', 'sync_workers': 'Sync workers'}


def attribute_values(values, explicit):
    """Columns and values of attributes, and the names set explicitly."""
    columns, row = [], []
    for name, value in values._asdict().items():
        columns.append(ATTRIBUTE_COLUMNS[name])
        row.append(timestamp(value) if name == 'next_sync' else value)
    columns.append('Set here')
    row.append(sorted(explicit))
    return tuple(columns), row


class ShowDisk(VolumeCommand, show.ShowOne):
    """Show one disk: zvol, size, state, lease, sync lag and attributes.

    The attributes are the effective ones; 'Set here' names those set on
    the volume itself (the others come from the vault, see vault show).
    """

    def take_action(self, parsed_args):
        engine = self.app.engine
        vid, disk = find_disk(self.app.vault, parsed_args.volume)
        row = disk_row(engine, vid, disk, True, time.time(),
                       flows_in_flight(self.app).get(vid))
        row.update({'Dataset': disk['dataset'], 'Size': disk['size']})
        if row['State'] not in (IN_VAULT, REMOTE, 'releasing'):
            row['Device'] = engine.names(vid).device
        columns = ('Volume', 'Dataset', 'Size') + LIST_COLUMNS[1:]
        columns += ('Device',) if 'Device' in row else ()
        attributes = self.app.attributes
        more, values = attribute_values(
            attributes.volume(disk['dataset']),
            attributes.explicit(disk['dataset']))
        return columns + more, [row[c] for c in columns] + values


def _add_attribute_options(parser, names):
    helps = {
        'frequency': 'seconds between sync points, or with a unit: 90s, '
                     '5m, 1h, 1d (60 s to 7 days)',
        'next_sync': 'when the next sync point is due: epoch seconds, an '
                     'ISO 8601 time (UTC) or "now"',
        'upload_rate': 'sync speed limit to the vault, bytes/second: '
                       '1048576, 10M, 1.5GiB; 0 is unlimited',
        'download_rate': 'seed speed limit from the vault, as --upload-rate',
        'sync_mode': 'sync (a local replica, synced back) or nosync '
                     '(plain read-write iSCSI to the vault)',
        'sync_workers': 'transfers (seeds and syncs) at once from this '
                        'vault, 1 to 64',
    }
    for name in names:
        parser.add_argument('--' + name.replace('_', '-'), dest=name,
                            metavar=name.upper(), help=helps[name])


def _given(parsed_args, names):
    """The attribute options given on the command line (raw strings)."""
    given = {n: getattr(parsed_args, n) for n in names
             if getattr(parsed_args, n) is not None}
    if not given:
        raise exception.InvalidInput(
            'nothing to set: give one of %s'
            % ', '.join('--' + n.replace('_', '-') for n in names))
    return given


class SetDisk(VolumeCommand):
    """Set attributes of a disk: sync schedule, speed limits, sync mode.

    Every value is checked before anything changes; the values are ZFS
    user properties on the disk's zvol, so they travel with it.
    """

    def get_parser(self, prog_name):
        parser = super(SetDisk, self).get_parser(prog_name)
        _add_attribute_options(parser, attrs.VOLUME_ATTRIBUTES)
        return parser

    def take_action(self, parsed_args):
        values = attrs.parse_volume(
            **_given(parsed_args, attrs.VOLUME_ATTRIBUTES))
        vid, disk = find_disk(self.app.vault, parsed_args.volume)
        self.app.attributes.set_volume(disk['dataset'], **values)


class UnsetDisk(VolumeCommand):
    """Unset attributes of a disk: it takes the vault's values again."""

    def get_parser(self, prog_name):
        parser = super(UnsetDisk, self).get_parser(prog_name)
        parser.add_argument('names', metavar='ATTR', nargs='+',
                            help='one of %s'
                                 % ', '.join(attrs.VOLUME_ATTRIBUTES))
        return parser

    def take_action(self, parsed_args):
        names = attrs.attribute_names('volume', attrs.VOLUME_ATTRIBUTES,
                                      parsed_args.names)
        vid, disk = find_disk(self.app.vault, parsed_args.volume)
        self.app.attributes.unset_volume(disk['dataset'], *names)


class VaultShow(show.ShowOne):
    """Show the vault's attributes: the defaults of its disks.

    'Set here' names those set on the vault; the others are the built-in
    defaults.
    """

    def take_action(self, parsed_args):
        attributes = self.app.attributes
        columns, values = attribute_values(attributes.vault(),
                                           attributes.explicit_vault())
        return (('Vault',) + columns,
                [attributes.vault_root] + values)


class VaultSet(command.Command):
    """Set vault attributes: sync workers, default frequency and speeds."""

    def get_parser(self, prog_name):
        parser = super(VaultSet, self).get_parser(prog_name)
        _add_attribute_options(parser, attrs.VAULT_ATTRIBUTES)
        return parser

    def take_action(self, parsed_args):
        values = attrs.parse_vault(
            **_given(parsed_args, attrs.VAULT_ATTRIBUTES))
        self.app.attributes.set_vault(**values)


class VaultUnset(command.Command):
    """Unset vault attributes: back to the built-in defaults."""

    def get_parser(self, prog_name):
        parser = super(VaultUnset, self).get_parser(prog_name)
        parser.add_argument('names', metavar='ATTR', nargs='+',
                            help='one of %s'
                                 % ', '.join(attrs.VAULT_ATTRIBUTES))
        return parser

    def take_action(self, parsed_args):
        self.app.attributes.unset_vault(*attrs.attribute_names(
            'vault', attrs.VAULT_ATTRIBUTES, parsed_args.names))


class Lock(VolumeCommand):
    """Take the lease of a disk for a host (this host by default).

    Taking it again for the same host keeps its generation; a lease held
    by another host is refused. Prints the lease taken.
    """

    def get_parser(self, prog_name):
        parser = super(Lock, self).get_parser(prog_name)
        parser.add_argument('--host', help='lease owner (default: this '
                                           'host, [zfs_vault_agent] host)')
        return parser

    def take_action(self, parsed_args):
        engine = self.app.engine
        host = leaselib.validate_host(parsed_args.host or engine.host)
        vid, disk = find_disk(self.app.vault, parsed_args.volume)
        lease = self.app.vault.leases.acquire(disk['dataset'], host)
        self.app.stdout.write('volume %s leased to %s, generation %d\n'
                              % (vid, lease.owner, lease.generation))


class Allow(VolumeCommand):
    """Let a fenced host take a disk again (on the vault host).

    After ``unlock -f`` the old owner may not lease the disk until an
    operator says so; its stale replica stays refused all the same (it
    must be discarded on that host: ``zfs-vault discard``).
    """

    def get_parser(self, prog_name):
        parser = super(Allow, self).get_parser(prog_name)
        parser.add_argument('host', metavar='HOST',
                            help='the fenced host to allow back')
        return parser

    def take_action(self, parsed_args):
        host = leaselib.validate_host(parsed_args.host)
        vid, _disk = find_disk(self.app.vault, parsed_args.volume)
        self.app.vault.allow(vid, host)
        self.app.stdout.write('volume %s: %s may lease it again\n'
                              % (vid, host))


class Discard(VolumeCommand):
    """Drop this host's fenced replica of a disk (on a compute host).

    Only once the vault broke this host's lease: the vault holds the disk
    as of its last sync point, and these writes will never be taken.
    Refused while this host still holds the lease (detach instead).
    """

    def take_action(self, parsed_args):
        vid = validation.volume_id(parsed_args.volume)
        self.app.engine.discard_fenced(vid)
        self.app.stdout.write('volume %s: fenced replica discarded from %s'
                              '\n' % (vid, self.app.engine.host))


class Unlock(VolumeCommand):
    """Release this host's lease of a disk, or break any lease (-f).

    A plain unlock releases only a lease this host holds, and only when no
    replica of the disk is here (detach syncs it back and releases it). -f
    breaks the lease whoever holds it: the generation is bumped first, so a
    late sync from the old owner is refused (fencing). The vault keeps the
    disk as of its newest sync point; the loss window printed is the time
    since then.
    """

    # A plain Command, not a ShowOne: there -f is cliff's output format.

    def get_parser(self, prog_name):
        parser = super(Unlock, self).get_parser(prog_name)
        parser.add_argument('-f', '--force', action='store_true',
                            help='break the lease, whoever holds it, and '
                                 'fence the holder')
        return parser

    def take_action(self, parsed_args):
        engine = self.app.engine
        vid, disk = find_disk(self.app.vault, parsed_args.volume)
        lease = disk['lease']
        if lease.owner is None:
            self.app.stdout.write('volume %s is not leased (generation %d)'
                                  ': nothing changed\n'
                                  % (vid, lease.generation))
        elif parsed_args.force:
            self._break(vid, disk)
        else:
            refuse_if_leased_elsewhere(engine, vid, disk)
            state = engine.state(vid)
            if state != IN_VAULT:
                raise exception.InvalidInput(
                    'volume %s has a replica on this host (%s): `zfs-vault '
                    'detach` syncs it back and releases the lease'
                    % (vid, state))
            self.app.vault.leases.release(disk['dataset'], lease.owner,
                                          lease.generation)
            self.app.stdout.write(
                'volume %s released by %s (generation %d)\n'
                % (vid, lease.owner, lease.generation))

    def _break(self, vid, disk):
        # On the vault: fenced, its sync in flight undone, its export and
        # session revoked, under the lease's lock.
        broken = self.app.vault.break_lease(vid)
        out = self.app.stdout
        out.write('volume %s: lease of %s broken, generation %d -> %d '
                  '(%s is fenced)\n' % (vid, broken.owner, broken.generation,
                                        broken.generation + 1, broken.owner))
        if disk['last_sync'] is None:
            out.write('loss window: no sync point in the vault; the writes '
                      '%s made since it took the lease are lost\n'
                      % broken.owner)
        else:
            window = max(0, int(time.time() - disk['last_sync']))
            out.write('loss window: %d s (the vault holds the disk as of %s)'
                      '\n' % (window, timestamp(disk['last_sync'])))


class Mapped(lister.Lister):
    """List the devices of the disks on this host (/dev/mapper/zvault-*).

    Table is what the device maps: 'snapshot' (the vault's iSCSI origin
    with a local COW zvol), 'snapshot-merge' (the cut-over merging into the
    local copy) or 'linear' (the local replica, or in non-sync mode the
    vault's LUN). The VM's device is a linear map on top of the first two;
    Table names the device under it. State is the disk's (list).
    """

    def take_action(self, parsed_args):
        columns = ('Volume', 'Device', 'Table', 'State', 'Open', 'Size')
        engine = self.app.engine
        devices = engine.dm.devices(DM_PREFIX)
        by_devno = {d['devno']: d for d in devices if d['devno']}
        rows = []
        for dev in devices:
            vid = validation.volume_id_in(dev['name'], DM_PREFIX)
            if vid is None:
                continue  # a device stacked under a VM's device
            below = [by_devno[u] for u in dev['uses'] if u in by_devno]
            kind = below[0]['kind'] if below else dev['kind']
            rows.append((vid, engine.dm.path(dev['name']), kind,
                         engine.state(vid), dev['open'], dev['size']))
        return columns, rows


def _sync_columns(vid, state, result):
    columns = ('Volume', 'State', 'Sync point', 'GUID', 'Bytes', 'Seconds')
    if result is None:
        return columns, (vid, state, None, None, 0, 0.0)
    return columns, (vid, state, result.snapshot, result.guid, result.bytes,
                     round(result.seconds, 3))


def _with_progress(app, label, call, *args):
    bar = app.progress(label)
    try:
        return call(*args, progress=bar)
    finally:
        if bar is not None:
            bar.finish()


class Attach(VolumeCommand, show.ShowOne):
    """Attach a disk on this host, then seed and cut over to a local copy.

    The device (/dev/mapper/zvault-<id>) is usable as soon as the attach
    step returns; the seed then copies the disk behind it (a progress bar on
    a terminal) and cuts over to the local copy, and the I/O pauses of the
    cut-over are printed. --no-seed stops after the attach. A warm replica
    still here is mapped again without a seed; a disk in non-sync mode is
    mapped read-write from the vault (state 'direct').
    """

    def get_parser(self, prog_name):
        parser = super(Attach, self).get_parser(prog_name)
        parser.add_argument('--no-seed', action='store_true',
                            help='only attach: the device runs on the '
                                 'vault\'s iSCSI origin until a seed')
        return parser

    def take_action(self, parsed_args):
        engine = self.app.engine
        vid, disk = find_disk(self.app.vault, parsed_args.volume)
        refuse_if_leased_elsewhere(engine, vid, disk)
        orchestrator = self.app.orchestrator
        device = orchestrator.attach(vid)
        state = engine.state(vid)
        pauses = None
        # Only a device on the origin has a seed to run: not a warm
        # re-attach ('local') nor a disk in non-sync mode ('direct').
        if state == 'seeding' and not parsed_args.no_seed:
            pauses = _with_progress(self.app, 'seed', orchestrator.seed, vid)
            pauses = [round(p, 3) for p in pauses or ()]
            state = engine.state(vid)
        return ('Volume', 'Device', 'State', 'Cut-over pauses (s)'), (
            vid, device, state, pauses)


class Detach(VolumeCommand, show.ShowOne):
    """Return a disk to the vault: final sync, then the replica goes.

    The device must be unused. The replica is destroyed and the lease
    released only after the vault confirmed the final sync point.
    """

    def take_action(self, parsed_args):
        engine = self.app.engine
        vid, disk = find_disk(self.app.vault, parsed_args.volume)
        refuse_if_leased_elsewhere(engine, vid, disk)
        result = _with_progress(self.app, 'final sync',
                                self.app.orchestrator.detach, vid)
        return _sync_columns(vid, engine.state(vid), result)


class Sync(VolumeCommand, show.ShowOne):
    """Sync a disk's local replica back to the vault now."""

    def take_action(self, parsed_args):
        engine = self.app.engine
        vid, disk = find_disk(self.app.vault, parsed_args.volume)
        refuse_if_leased_elsewhere(engine, vid, disk)
        if disk['lease'].owner is None:
            raise exception.InvalidInput('volume %s is in the vault: '
                                         'nothing to sync' % vid)
        result = _with_progress(self.app, 'sync',
                                self.app.orchestrator.sync, vid)
        return _sync_columns(vid, engine.state(vid), result)


def main(argv=None, conf=None, command_manager=None):
    """Console script ``zfs-vault``. :returns: the exit status."""
    # os-brick's privsep imports eventlet, which warns about itself on
    # every run; nothing an operator of this command can act on.
    warnings.filterwarnings('ignore', message='(?s).*Eventlet is deprecated')
    zfs_vault = ZFSVaultApp(conf=conf, command_manager=command_manager)
    return zfs_vault.run(sys.argv[1:] if argv is None else argv)


if __name__ == '__main__':
    sys.exit(main())
