"""Typed calls over the ``zfs`` and ``zpool`` command line.

Output is read in scripted mode (``-H``: tab separated, no header) with exact
numbers (``-p``: bytes, not "1.5G"), as ``zfs(8)`` recommends for scripts.
Failures are mapped from the CLI's messages onto the classes in
:mod:`cinder_zfs_vault.exception`. Every name is validated before the command
line is built; arguments are passed as a list, never through a shell.
"""

import os
import time

from oslo_concurrency import processutils
from oslo_log import log as logging

from cinder_zfs_vault import exception
from cinder_zfs_vault import validation

LOG = logging.getLogger(__name__)

# Substrings of zfs/zpool error messages (libzfs_util.c, zfs_main.c) and the
# exception each means. The first match wins.
_ERRORS = (
    ('has been modified', exception.Diverged),
    ('does not match incremental source', exception.Diverged),
    ('does not exist', exception.NotFound),
    # zfs destroy of a snapshot (or a list of them) that is gone.
    ('could not find any snapshots to destroy', exception.NotFound),
    ('no such pool', exception.NotFound),
    ('dataset already exists', exception.AlreadyExists),
    ('already exists', exception.AlreadyExists),
    ('dataset is busy', exception.Busy),
    ('pool or dataset is busy', exception.Busy),
    ('is busy', exception.Busy),
    ('has dependent clones', exception.HasDependents),
    ('has children', exception.HasDependents),
    ('more recent snapshots or bookmarks exist', exception.HasDependents),
    ('out of space', exception.OutOfSpace),
    ('greater than available space', exception.OutOfSpace),
    ('insufficient space', exception.OutOfSpace),
    ('quota exceeded', exception.OutOfSpace),
)


def wait_for_zvol(path, timeout, interval=0.1):
    """Wait for a zvol's device link (``/dev/zvol/...``) to appear.

    udev makes it after ``zfs create``, a receive or a pool's import, a
    while later at boot. :param timeout: seconds. :returns: ``path``.
    :raises NotFound: it did not appear in time.
    """
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise exception.NotFound('%s did not appear in %ss'
                                     % (path, timeout))
        time.sleep(interval)
    return path


def _to_int(value):
    """Numbers from ``-p`` output; '-' (not applicable) becomes None."""
    return None if value in ('-', '') else int(value)


def _pairs(out):
    """``property<TAB>value`` lines of ``zfs get``/``zpool get`` as a dict."""
    result = {}
    for line in out.splitlines():
        if line:
            key, _, value = line.partition('\t')
            result[key] = value
    return result


def error_class(stderr, default=None):
    """The exception class for what ``zfs`` said on stderr (:data:`_ERRORS`).

    Also for a stream's ``zfs recv``, so that a full pool is OutOfSpace and
    a changed target Diverged wherever the receive ran.
    """
    for needle, cls in _ERRORS:
        if needle in (stderr or ''):
            return cls
    return default


class ZFS(object):
    """The ``zfs``/``zpool`` CLI behind an injected executor.

    :param executor: see :mod:`cinder_zfs_vault.executor`.
    """

    def __init__(self, executor):
        self._execute = executor

    # -- running ------------------------------------------------------------

    def _run(self, *argv, check_exit_code=True):
        try:
            out, _err = self._execute(*argv, check_exit_code=check_exit_code)
        except processutils.ProcessExecutionError as e:
            raise self._classify(argv, e) from None
        return out

    @staticmethod
    def _classify(argv, error):
        stderr = (error.stderr or '').strip()
        cmd = ' '.join(str(a) for a in argv)
        cls = error_class(stderr)
        if cls:
            return cls('%s: %s' % (cmd, stderr), command=cmd, stderr=stderr)
        return exception.CommandFailed(
            '%s failed (exit %s): %s' % (cmd, error.exit_code, stderr),
            command=cmd, stderr=stderr)

    @staticmethod
    def _props_args(properties):
        args = []
        for key, value in sorted((properties or {}).items()):
            if ':' in key:
                validation.user_property(key)
            args += ['-o', '%s=%s' % (key, validation.property_value(value))]
        return args

    # -- queries ------------------------------------------------------------

    def list(self, root, props=('name',), types=('volume',), recursive=True,
             depth=None, sort=None):
        """Rows of ``zfs list -Hp`` under ``root`` as dicts keyed by ``props``.

        One command for the whole tree. Numeric properties stay strings; use
        :func:`int` or the typed helpers.

        :param root: dataset (or pool) to list; included itself if its type
            is among ``types``.
        :param types: 'volume', 'filesystem', 'snapshot', 'bookmark', 'all'.
        :param sort: property to sort ascending by (``-s``).
        :raises NotFound: ``root`` does not exist.
        """
        validation.dataset_or_snapshot(root)
        argv = ['zfs', 'list', '-Hp', '-o', ','.join(props),
                '-t', ','.join(types)]
        if depth is not None:
            argv += ['-d', str(int(depth))]
        elif recursive:
            argv.append('-r')
        if sort:
            argv += ['-s', sort]
        argv.append(root)
        rows = []
        for line in self._run(*argv).splitlines():
            if line:
                rows.append(dict(zip(props, line.split('\t'))))
        return rows

    def get(self, name, props):
        """``zfs get -Hp`` of ``props`` on one dataset or snapshot.

        :returns: dict of property name to string value ('-' when unset).
        :raises NotFound: no such dataset.
        """
        validation.dataset_or_snapshot(name)
        for p in props:
            if ':' in p:
                validation.user_property(p)
        return _pairs(self._run('zfs', 'get', '-Hp', '-o', 'property,value',
                                ','.join(props), name))

    def get_local(self, names, props, depth=None):
        """Properties set on the datasets themselves (source ``local``).

        One ``zfs get -Hp -o name,property,value,source`` over ``names``
        (with ``depth``: and their filesystems and volumes down to that
        depth). The source column tells a value set on a dataset from one
        it inherits or a default, which plain :meth:`get` cannot.

        :param names: datasets (at least one).
        :returns: ``{dataset: {prop: value}}`` for every dataset listed,
            holding only its local properties (``{}`` when none).
        :raises NotFound: one of ``names`` does not exist.
        """
        if not names:
            raise exception.InvalidInput('get_local needs a dataset')
        for name in names:
            validation.dataset(name)
        for p in props:
            if ':' in p:
                validation.user_property(p)
        argv = ['zfs', 'get', '-Hp']
        if depth is not None:
            argv += ['-d', str(int(depth)), '-t', 'filesystem,volume']
        argv += ['-o', 'name,property,value,source', ','.join(props)]
        result = {}
        for line in self._run(*(argv + list(names))).splitlines():
            if not line:
                continue
            name, prop, rest = line.split('\t', 2)
            value, _, source = rest.rpartition('\t')
            local = result.setdefault(name, {})
            if source == 'local':
                local[prop] = value
        return result

    def exists(self, name):
        """True if the dataset or snapshot exists."""
        try:
            self.get(name, ('type',))
        except exception.NotFound:
            return False
        return True

    def snapshots(self, name):
        """Snapshots of ``name``, oldest first.

        :returns: list of dicts with ``name`` (full ``ds@snap``), ``snap``
            (after '@'), ``createtxg`` (int), ``clones`` (list of datasets),
            ``userrefs`` (int, holds) and ``guid`` (str).
        """
        rows = self.list(name, props=('name', 'createtxg', 'clones',
                                      'userrefs', 'guid'),
                         types=('snapshot',), depth=1, sort='createtxg')
        result = []
        for row in rows:
            clones = row['clones']
            result.append({
                'name': row['name'],
                'snap': row['name'].split('@', 1)[1],
                'createtxg': int(row['createtxg']),
                'clones': [] if clones in ('', '-') else clones.split(','),
                'userrefs': _to_int(row['userrefs']) or 0,
                'guid': row['guid'],
            })
        return result

    # -- changes ------------------------------------------------------------

    def create_volume(self, name, size, sparse=True, properties=None):
        """``zfs create -V size [-s] name``.

        :param size: bytes, a multiple of ``volblocksize``.
        :param sparse: no ``refreservation`` (thin), ``zfs(8)`` ``-s``.
        :param properties: extra ``-o`` properties (volblocksize, compression,
            user properties).
        :raises AlreadyExists, OutOfSpace, NotFound (no parent).
        """
        validation.dataset(name)
        argv = ['zfs', 'create']
        if sparse:
            argv.append('-s')
        argv += self._props_args(properties)
        argv += ['-V', str(int(size)), name]
        self._run(*argv)

    def destroy(self, name, recursive=False, defer=False):
        """``zfs destroy [-r] [-d] name``.

        :param defer: for a snapshot with clones, mark it for deferred
            destruction instead of failing (``zfs destroy -d``).
        :raises NotFound, Busy, HasDependents.
        """
        validation.dataset_or_snapshot(name)
        argv = ['zfs', 'destroy']
        if recursive:
            argv.append('-r')
        if defer:
            argv.append('-d')
        argv.append(name)
        self._run(*argv)

    def snapshot(self, name, properties=None):
        """``zfs snapshot ds@snap``. :raises AlreadyExists, NotFound."""
        validation.snapshot(name)
        self._run('zfs', 'snapshot', *self._props_args(properties), name)

    def clone(self, snapshot, name, properties=None):
        """``zfs clone snapshot name``: O(1), shares blocks with the origin."""
        validation.snapshot(snapshot)
        validation.dataset(name)
        self._run('zfs', 'clone', *self._props_args(properties),
                  snapshot, name)

    def promote(self, name):
        """``zfs promote name``.

        The clone takes over its origin's snapshots up to and including
        its own origin snapshot.
        """
        validation.dataset(name)
        self._run('zfs', 'promote', name)

    def rename(self, old, new):
        """``zfs rename old new`` (same pool; a snapshot within its dataset).

        A renamed snapshot keeps its GUID, holds and clones
        (``zfs-rename(8)``).
        """
        validation.dataset_or_snapshot(old)
        validation.dataset_or_snapshot(new)
        if ('@' in old) != ('@' in new) or (
                '@' in old and old.split('@')[0] != new.split('@')[0]):
            raise exception.InvalidInput('cannot rename %s to %s' % (old, new))
        self._run('zfs', 'rename', old, new)

    def set(self, name, properties):
        """``zfs set prop=value ... name`` in one command."""
        validation.dataset_or_snapshot(name)
        args = [a for a in self._props_args(properties) if a != '-o']
        if args:
            self._run('zfs', 'set', *args, name)

    def inherit(self, name, prop):
        """``zfs inherit prop name``: removes a user property."""
        validation.dataset_or_snapshot(name)
        validation.user_property(prop)
        self._run('zfs', 'inherit', prop, name)

    def rollback(self, snapshot, recursive=False):
        """``zfs rollback [-r] snapshot``.

        :param recursive: destroy the snapshots newer than ``snapshot``
            (``-r``); without it only the most recent one can be the target.
        :raises HasDependents: newer snapshots exist (without ``-r``), or
            a newer one has clones.
        """
        validation.snapshot(snapshot)
        argv = ['zfs', 'rollback'] + (['-r'] if recursive else [])
        self._run(*(argv + [snapshot]))

    def abort_receive(self, dataset):
        """``zfs recv -A dataset``: drop a cut receive's saved state.

        The resume token goes with it (``zfs-receive(8)``). Nothing to
        abort is not an error.
        """
        validation.dataset(dataset)
        try:
            self._run('zfs', 'recv', '-A', dataset)
        except (exception.NotFound, exception.CommandFailed) as e:
            if 'does not have any resumable receive state' not in (
                    e.stderr or ''):
                raise

    def hold(self, snapshot, tag):
        """``zfs hold tag snapshot``: the snapshot cannot be destroyed.

        An existing hold with the same tag is kept.
        """
        validation.snapshot(snapshot)
        validation.snapshot_name(tag)
        try:
            self._run('zfs', 'hold', tag, snapshot)
        except exception.AlreadyExists:
            pass

    def release(self, snapshot, tag):
        """``zfs release tag snapshot``; a missing hold is not an error."""
        validation.snapshot(snapshot)
        validation.snapshot_name(tag)
        try:
            self._run('zfs', 'release', tag, snapshot)
        except (exception.NotFound, exception.CommandFailed) as e:
            if 'no such tag' not in (e.stderr or '') and \
                    not isinstance(e, exception.NotFound):
                raise

    # -- pools --------------------------------------------------------------

    def stream_argv(self, argv):
        """argv that runs ``zfs send``/``recv`` where this pool is.

        Through the executor (executor.py): the command itself locally,
        wrapped in ``ssh`` for a remote vault.
        """
        wrap = getattr(self._execute, 'stream_argv', None)
        return wrap(argv) if wrap else list(argv)

    def dry_run(self, send_args):
        """Output (stdout and stderr) of ``zfs send -nvP ...``."""
        if '-nvP' not in send_args:
            raise exception.InvalidInput('not a dry run: %s' % (send_args,))
        out, err = self._execute('zfs', *send_args)
        return out + err

    def send_size(self, send_args):
        """Size in bytes of a dry-run send (``zfs send -nvP ...``).

        :param send_args: the arguments after ``zfs`` (``send``, ``-nvP``,
            ..., the snapshot), built by transfer.send_argv.
        """
        out, err = self._execute('zfs', *send_args)
        for line in (out + err).splitlines():
            fields = line.split()
            if fields and fields[0] == 'size':
                return int(fields[1])
        return 0

    def pool_get(self, pool, props):
        """``zpool get -Hp`` of ``props``. :raises NotFound: no such pool."""
        validation.dataset(pool)
        return _pairs(self._run('zpool', 'get', '-Hp', '-o', 'property,value',
                                ','.join(props), pool))
