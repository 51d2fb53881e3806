"""Device-mapper tables for the lazy replica, through ``dmsetup(8)``.

The three tables a replica device goes through (kernel documentation,
``device-mapper/snapshot.rst``; the img-storage data path):

* ``snapshot <origin> <cow> P <chunk>``: reads come from the iSCSI origin
  until written; writes land in the local copy-on-write device.
* ``snapshot-merge <local copy> <cow> P <chunk>``: after the seed, the COW
  chunks are merged into the local copy while I/O goes on.
* ``linear <local copy> 0``: the steady state, local disk speed.

The device the VM uses is always a ``linear`` map on top. Before the
cut-over it maps a second device, the ``snapshot``; at the cut-over it is
pointed at a third, the ``snapshot-merge``; once merged, at the local copy
itself, as LVM stacks its merges: the snapshot targets never change table,
and each swap is a reload of the top ``linear``. While it is suspended the
VM's writes wait in device-mapper and go on after the resume (the lab's
cut-over tests run an O_DIRECT writer through every swap).
"""

import ctypes
import ctypes.util
import errno
import os
import re
import threading
import time

from oslo_concurrency import processutils

from cinder_zfs_vault import exception
from cinder_zfs_vault import validation

SECTOR = 512
#: Snapshot chunk size in sectors (8 KiB), as img-storage uses.
CHUNK_SECTORS = 16

# Matched whole (re.fullmatch: '$' would let a trailing newline through)
# and in ASCII classes ('\d' is any Unicode digit).
_NAME_RE = re.compile(r'[A-Za-z0-9][A-Za-z0-9_.+-]{0,120}')
_DEVNO_RE = re.compile(r'[0-9]{1,10}:[0-9]{1,10}')
# A path is one field of a table line: printable ASCII without a space
# (a space or newline would add fields or lines to the table).
_PATH_RE = re.compile(r'/dev(/[!-~]+)+')


def _device(path):
    """A device path under /dev, or a ``major:minor`` number.

    :raises InvalidInput: anything else, or a path with a '..' component.
    """
    if isinstance(path, str) and _DEVNO_RE.fullmatch(path):
        return path
    if not isinstance(path, str) or not _PATH_RE.fullmatch(path) or \
            '..' in path.split('/'):
        raise exception.InvalidInput('invalid block device %s'
                                     % validation.shown(path))
    return path


def snapshot_table(sectors, origin, cow):
    return '0 %d snapshot %s %s P %d' % (sectors, _device(origin),
                                         _device(cow), CHUNK_SECTORS)


def merge_table(sectors, local, cow):
    return '0 %d snapshot-merge %s %s P %d' % (sectors, _device(local),
                                               _device(cow), CHUNK_SECTORS)


def linear_table(sectors, local):
    return '0 %d linear %s 0' % (sectors, _device(local))


class _Info(ctypes.Structure):
    """``struct dm_info`` of libdevmapper.h."""

    _fields_ = [('exists', ctypes.c_int), ('suspended', ctypes.c_int),
                ('live_table', ctypes.c_int),
                ('inactive_table', ctypes.c_int),
                ('open_count', ctypes.c_int32), ('event_nr', ctypes.c_uint32),
                ('major', ctypes.c_uint32), ('minor', ctypes.c_uint32),
                ('read_only', ctypes.c_int), ('target_count', ctypes.c_int32),
                ('deferred_remove', ctypes.c_int),
                ('internal_suspend', ctypes.c_int)]


class LibDM(object):
    """The table swaps' ioctls through libdevmapper, in this process.

    ``dmsetup`` is a process per step: the cut-over's first swap ran six
    of them while the VM's I/O was held, nine times one bare ``dmsetup
    resume`` (issue 21, the pause benchmark). libdevmapper (dmsetup's own
    library, ``libdevmapper.h``) does each step as one ioctl here. Calls
    are serialised (the library keeps global state). No udev sync, as
    ``--noudevsync``: udev changes nothing of a swap, and waiting for it
    while I/O is held is how a swap hangs.
    """

    # enum of libdevmapper.h
    CREATE, RELOAD, SUSPEND, RESUME, INFO = 0, 1, 4, 5, 6

    def __init__(self, path=None, timeout=300):
        #: Seconds a step may take (a suspend waits for the I/O in flight,
        #: e.g. to an origin whose session died), as dmsetup's processes
        #: had the executor's command timeout.
        self.timeout = timeout
        lib = ctypes.CDLL(path or ctypes.util.find_library('devmapper')
                          or 'libdevmapper.so.1.02.1', use_errno=True)
        lib.dm_task_create.restype = ctypes.c_void_p
        lib.dm_task_create.argtypes = [ctypes.c_int]
        lib.dm_task_set_name.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.dm_task_add_target.argtypes = [
            ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint64,
            ctypes.c_char_p, ctypes.c_char_p]
        lib.dm_task_skip_lockfs.argtypes = [ctypes.c_void_p]
        lib.dm_task_run.argtypes = [ctypes.c_void_p]
        lib.dm_task_get_info.argtypes = [ctypes.c_void_p,
                                         ctypes.POINTER(_Info)]
        lib.dm_task_get_errno.argtypes = [ctypes.c_void_p]
        lib.dm_task_destroy.argtypes = [ctypes.c_void_p]
        lib.dm_udev_set_sync_support(0)
        self._lib = lib
        self._lock = threading.Lock()

    @classmethod
    def load(cls, timeout=300):
        """A LibDM, or None where libdevmapper cannot be loaded."""
        try:
            return cls(timeout=timeout)
        except (OSError, AttributeError):
            return None

    def run(self, kind, name, table=None):
        """One task on device ``name``; :returns: its ``_Info``.

        In a thread of its own, waited for :attr:`timeout` seconds: an
        ioctl cannot be killed, but its caller (a flow) fails and stays
        resumable instead of hanging with it.
        :param table: a table line (``start length target params``), for
            CREATE and RELOAD.
        :raises NotFound, Busy, CommandFailed: as ``dmsetup``'s errors.
        :raises CommandTimedOut: the step did not end in time.
        """
        outcome = []

        def step():
            try:
                outcome.append((True, self._run(kind, name, table)))
            except Exception as e:
                outcome.append((False, e))
        worker = threading.Thread(target=step, daemon=True,
                                  name='dm-%s' % name)
        worker.start()
        worker.join(self.timeout)
        if not outcome:
            raise exception.CommandTimedOut(
                'device-mapper task %d on %s did not end in %ss'
                % (kind, name, self.timeout))
        ok, value = outcome[0]
        if not ok:
            raise value
        return value

    def _run(self, kind, name, table):
        lib = self._lib
        if not self._lock.acquire(timeout=self.timeout):
            raise exception.CommandTimedOut(
                'device-mapper busy with a step that did not end')
        try:
            task = lib.dm_task_create(kind)
            if not task:
                raise exception.CommandFailed('dm_task_create failed')
            try:
                ok = lib.dm_task_set_name(task, name.encode())
                if ok and table is not None:
                    start, length, target, params = table.split(' ', 3)
                    ok = lib.dm_task_add_target(
                        task, int(start), int(length), target.encode(),
                        params.encode())
                if ok and kind == self.SUSPEND:
                    ok = lib.dm_task_skip_lockfs(task)
                if not ok or not lib.dm_task_run(task):
                    raise self._error(kind, name,
                                      lib.dm_task_get_errno(task))
                info = _Info()
                if not lib.dm_task_get_info(task, ctypes.byref(info)):
                    raise exception.CommandFailed('dm_task_get_info of %s '
                                                  'failed' % name)
                return info
            finally:
                lib.dm_task_destroy(task)
        finally:
            self._lock.release()

    @staticmethod
    def _error(kind, name, code):
        what = 'device-mapper task %d on %s: %s' % (
            kind, name, os.strerror(code) if code else 'failed')
        if code in (errno.ENXIO, errno.ENODEV, errno.ENOENT):
            return exception.NotFound(what)
        if code == errno.EBUSY:
            return exception.Busy(what)
        return exception.CommandFailed(what)


class DeviceMapper(object):
    """``dmsetup`` behind an injected executor (see executor.py).

    :param lib: a :class:`LibDM`, which then runs the table swaps'
        steps (suspend, reload, resume, a create without udev, a device's
        number) in this process; None: ``dmsetup`` for everything.
    """

    def __init__(self, executor, lib=None):
        self._execute = executor
        self._lib = lib

    @staticmethod
    def name(value):
        """``value`` if it is a dm name we make, else InvalidInput.

        ASCII letters, digits, '_', '.', '+' and '-', starting with a
        letter or digit (never an option), at most 121 characters (the
        kernel's DM_NAME_LEN is 128).
        """
        if not isinstance(value, str) or not _NAME_RE.fullmatch(value):
            raise exception.InvalidInput('invalid dm device name %s'
                                         % validation.shown(value))
        return value

    @staticmethod
    def path(name):
        return '/dev/mapper/%s' % name

    def _run(self, *argv):
        try:
            return self._execute('dmsetup', *argv)[0]
        except processutils.ProcessExecutionError as e:
            err = (e.stderr or '').strip()
            if ('No such device' in err or 'not found' in err
                    or 'does not exist' in err):
                raise exception.NotFound('dmsetup %s: %s'
                                         % (' '.join(argv), err))
            if 'busy' in err:
                raise exception.Busy('dmsetup %s: %s' % (' '.join(argv), err))
            raise exception.CommandFailed('dmsetup %s: %s'
                                          % (' '.join(argv), err))

    def exists(self, name):
        try:
            self._run('info', self.name(name))
        except exception.NotFound:
            return False
        return True

    def table(self, name):
        """The live table line, e.g. ``0 2097152 linear 230:16 0``."""
        return self._run('table', self.name(name)).strip()

    def devices(self, prefix=''):
        """Devices whose name starts with ``prefix``, in two commands.

        ``dmsetup table`` (every device, ``name: <table line>`` per
        segment) and ``dmsetup info -c`` (numbers and open counts).

        :returns: list of dicts sorted by ``name``: ``kind`` (target type
            of the first segment, e.g. 'snapshot', 'snapshot-merge',
            'linear'; None for a device without a table), ``size`` (bytes,
            all segments), ``uses`` (``major:minor`` of the devices its
            table maps, in order), ``devno`` (its own ``major:minor``) and
            ``open`` (open count); the last two None if the device went
            away between the two commands.
        """
        found = {}
        for line in self._run('table').splitlines():
            name, sep, table = line.partition(': ')
            if not sep or not name.startswith(prefix):
                continue  # 'No devices found', or not ours
            fields = table.split()
            dev = found.setdefault(name, {'name': name, 'kind': None,
                                          'size': 0, 'uses': [],
                                          'devno': None, 'open': None})
            if len(fields) >= 3:
                dev['kind'] = dev['kind'] or fields[2]
                dev['size'] += int(fields[1]) * SECTOR
                dev['uses'] += [f for f in fields[3:]
                                if _DEVNO_RE.fullmatch(f)]
        out = self._run('info', '-c', '--noheadings', '--separator', '\t',
                        '-o', 'name,major,minor,open')
        for line in out.splitlines():
            fields = line.rsplit('\t', 3)
            if len(fields) == 4 and fields[0] in found:
                found[fields[0]].update(devno='%s:%s' % tuple(fields[1:3]),
                                        open=int(fields[3]))
        return [found[name] for name in sorted(found)]

    def create(self, name, table, udev=True):
        """Create and activate a device.

        :param udev: wait for udev to make ``/dev/mapper/<name>``. Off when
            another device is suspended: stack by :meth:`devno` instead.
        """
        if not udev and self._lib:
            self._lib.run(LibDM.CREATE, self.name(name), table)
            return
        argv = ['create', self.name(name), '--table', table]
        if not udev:
            argv.insert(1, '--noudevsync')
        self._run(*argv)

    def devno(self, name):
        """``major:minor`` of a device, for stacking one table on another."""
        if self._lib:
            info = self._lib.run(LibDM.INFO, self.name(name))
            if not info.exists:
                raise exception.NotFound('no dm device %s' % name)
            return '%d:%d' % (info.major, info.minor)
        out = self._run('info', '-c', '--noheadings', '--separator', ':',
                        '-o', 'major,minor', self.name(name))
        return out.strip()

    def deps(self, name):
        """Names of the devices a device's table uses (dm names for dm)."""
        out = self._run('deps', '-o', 'devname', self.name(name))
        return re.findall(r'\(([^)]+)\)', out)

    # No udev sync while a device is suspended: nothing udev does changes
    # with a table swap, and waiting for it while I/O is held is how a swap
    # hangs. No lockfs: the VM's file system is not mounted here.

    def suspend(self, name):
        if self._lib:
            self._lib.run(LibDM.SUSPEND, self.name(name))
            return
        self._run('suspend', '--nolockfs', '--noudevsync', self.name(name))

    def resume(self, name):
        if self._lib:
            self._lib.run(LibDM.RESUME, self.name(name))
            return
        self._run('resume', '--noudevsync', self.name(name))

    def reload(self, name, table):
        if self._lib:
            self._lib.run(LibDM.RELOAD, self.name(name), table)
            return
        self._run('reload', '--noudevsync', self.name(name), '--table', table)

    def swap(self, name, table):
        """Suspend, load ``table``, resume.

        :returns: seconds the device was suspended (the I/O pause).
        """
        self.suspend(name)
        start = time.monotonic()
        try:
            self.reload(name, table)
        finally:
            self.resume(name)
        return time.monotonic() - start

    def suspended(self, name):
        out = self._run('info', '-c', '--noheadings', '-o', 'suspended',
                        self.name(name))
        return out.strip() == 'Suspended'

    def open_count(self, name):
        out = self._run('info', '-c', '--noheadings', '-o', 'open',
                        self.name(name))
        return int(out.strip())

    def in_use(self, name, grace=10.0, interval=0.2):
        """Whether the device stays open for ``grace`` seconds.

        A writer's close makes udev probe the device (its inotify watch, a
        synthetic change event, blkid): a moment's open count that is not
        the VM's. Only a count that lasts means the device is in use.
        """
        deadline = time.monotonic() + grace
        while self.open_count(name):
            if time.monotonic() >= deadline:
                return True
            time.sleep(interval)
        return False

    def remove(self, name):
        """Remove the device; succeed if it is gone. :raises Busy: open."""
        try:
            self._run('remove', self.name(name))
        except exception.NotFound:
            pass

    def merge_done(self, name):
        """True when a ``snapshot-merge`` has merged every chunk.

        Status is ``<allocated>/<total> <metadata>`` in sectors; the merge
        is complete when only metadata remains allocated.
        """
        status = self._run('status', self.name(name)).split()
        allocated = int(status[3].split('/')[0])
        metadata = int(status[4])
        return allocated == metadata

    def wait_merged(self, name, timeout, interval=0.2):
        deadline = time.monotonic() + timeout
        while not self.merge_done(name):
            if time.monotonic() > deadline:
                raise exception.CommandFailed(
                    'snapshot-merge of %s not done in %ss' % (name, timeout))
            time.sleep(interval)


def sectors(size_bytes):
    return int(size_bytes) // SECTOR
