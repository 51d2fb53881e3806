"""``zfs send | zfs recv`` with throttling, progress, stall timeout and resume.

The two ends run as child processes (argv lists, never a shell); the bytes
pass through this process (spliced from pipe to pipe, never copied into
Python), which counts them (progress), paces them (the per-volume
upload/download limit) and notices a stalled sender or receiver. Receives use
``zfs recv -s`` so that a cut stream leaves a ``receive_resume_token`` on the
target; :func:`resume_token` reads it and :func:`send_argv` turns it into
``zfs send -t`` (``zfs-send(8)``, ``zfs-receive(8)``). A receive is never
forced (``-F``): if the target diverged from the base snapshot, ZFS refuses
and so do we.
"""

import collections
import fcntl
import os
import select
import subprocess
import time

from oslo_log import log as logging

from cinder_zfs_vault import exception
from cinder_zfs_vault import executor
from cinder_zfs_vault import protocol
from cinder_zfs_vault import validation
from cinder_zfs_vault import zfs

LOG = logging.getLogger(__name__)

BUFFER = 1024 * 1024

#: Outcome of a transfer: bytes moved, seconds taken.
Result = collections.namedtuple('Result', 'bytes seconds')


def send_argv(snapshot=None, base=None, token=None, raw=False):
    """``zfs send`` argv: full, incremental (``-I base``), or resumed.

    ``-I`` sends every intermediate snapshot, so the receiver keeps the
    same sync points. ``-L -c`` keep large and compressed blocks as they
    are on disk (less CPU, fewer bytes).
    """
    if token:
        if not all(c.isalnum() or c in '-_' for c in token):
            raise exception.InvalidInput('invalid resume token')
        return ['zfs', 'send', '-t', token]
    validation.snapshot(snapshot)
    argv = ['zfs', 'send', '-L', '-c']
    if raw:
        argv.append('-w')
    if base:
        validation.dataset_or_snapshot(base)
        argv += ['-I', base]
    return argv + [snapshot]


def recv_argv(dataset):
    """``zfs recv -s -u dataset``: resumable, never forced."""
    validation.dataset(dataset)
    return ['zfs', 'recv', '-s', '-u', dataset]


def estimate(zfs, snapshot, base=None):
    """Bytes the stream will carry, from ``zfs send -nvP`` (dry run).

    :param zfs: the :class:`~cinder_zfs_vault.zfs.ZFS` of the sending side.
    """
    argv = send_argv(snapshot, base)
    argv.insert(2, '-nvP')
    return zfs.send_size(argv[1:])


def resume_token(zfs, dataset):
    """The ``receive_resume_token`` left by a cut receive, or None."""
    try:
        value = zfs.get(dataset, ('receive_resume_token',))
    except exception.NotFound:
        return None
    return token(value.get('receive_resume_token'))


def token(value):
    """A ``receive_resume_token`` property's value as a token, or None."""
    return None if value in (None, '', '-') else value


class Throttle(object):
    """Paces a stream to ``rate`` bytes per second (None or 0: unlimited).

    ``rate`` is read at every chunk: a caller may change it while the
    stream runs (a seed a user waits on goes on unthrottled,
    compute_host/phases/seed.py ``Urgency``). A rate below
    :data:`protocol.MIN_PACE` paces at it: the vault fails a slower stream.
    """

    def __init__(self, rate=None):
        self.rate = rate
        self._start = time.monotonic()
        self._sent = 0

    #: Seconds of one sleep at most: a chunk of BUFFER bytes at a low
    #: rate is minutes ahead, and a rate lifted meanwhile must show.
    SLICE = 1.0

    def __call__(self, nbytes):
        self._sent += nbytes
        while self.rate:
            rate = max(self.rate, protocol.MIN_PACE)
            ahead = self._sent / float(rate) - (time.monotonic()
                                                - self._start)
            if ahead <= 0:
                return
            time.sleep(min(ahead, self.SLICE))


def pipe(send, recv, rate=None, stall_timeout=60, progress=None,
         send_prefix=(), recv_prefix=(), granted_by=None, slot_timeout=3600,
         preempted=None):
    """Run ``send | recv`` through this process.

    :param send: argv of the sender (see :func:`send_argv`).
    :param recv: argv of the receiver (see :func:`recv_argv`).
    :param rate: bytes per second, None for unlimited, or a
        :class:`Throttle` (whose rate may change while the stream runs).
    :param stall_timeout: seconds without a byte before both ends are
        killed and :class:`~cinder_zfs_vault.exception.CommandFailed` is
        raised (the receive keeps its resume token).
    :param progress: callable(bytes_done) called as data moves.
    :param send_prefix: argv prefix (``ssh host``) for a remote sender.
    :param granted_by: ``'send'`` or ``'recv'``: that end is a stream of
        the vault endpoint, which waits for a transfer slot and then says
        :data:`~cinder_zfs_vault.protocol.SLOT_GRANTED` on its standard
        error; the stall clock starts only then.
    :param slot_timeout: seconds to wait for that grant (the vault refuses
        at its own ``slot_timeout``; this bounds a vault that never says).
    :param preempted: callable() -> bool, asked every
        :data:`PREEMPT_POLL` seconds while the grant is awaited: True ends
        the stream before a byte moved (a caller waits on the disk).
    :returns: :data:`Result`.
    :raises CommandFailed: either end failed; stderr is in the message.
    :raises Preempted: ``preempted()`` said so before the grant.
    """
    start = time.monotonic()
    sender = subprocess.Popen(list(send_prefix) + list(send),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        receiver = subprocess.Popen(list(recv_prefix) + list(recv),
                                    stdin=subprocess.PIPE,
                                    stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE)
    except Exception:
        sender.kill()
        sender.wait()
        raise
    throttle = rate if isinstance(rate, Throttle) else Throttle(rate)
    moved = 0
    failure = None
    said = {'send': bytearray(), 'recv': bytearray()}  # before the grant
    try:
        if granted_by:
            _await_grant(
                (sender if granted_by == 'send' else receiver).stderr,
                slot_timeout, said[granted_by], preempted)
        moved = _relay(sender.stdout.fileno(), receiver.stdin, throttle,
                       stall_timeout, progress)
    except (OSError, exception.CommandFailed) as e:
        failure = e
        sender.kill()
        receiver.kill()
    except BaseException:
        # Anything else (a progress callback's error, a signal): no end
        # may outlive this call, nor stay a zombie; the receive keeps its
        # resume token.
        _reap(sender, receiver)
        raise
    finally:
        sender.stdout.close()
        try:
            receiver.stdin.close()
        except OSError:
            pass
    # After the stream, both ends must exit within stall_timeout (zfs recv
    # commits what it received): a wedged one is killed, not waited for.
    send_rc, send_err = _ended(sender, said['send'], stall_timeout)
    recv_rc, recv_err = _ended(receiver, said['recv'], stall_timeout)
    if isinstance(failure, exception.Preempted):
        raise failure  # its ends were stopped before the stream began
    if failure is None and None in (send_rc, recv_rc):
        failure = exception.CommandTimedOut(
            'an end still ran %ss after the stream ended' % stall_timeout)
    if failure or send_rc or recv_rc:
        what = '%s | %s' % (' '.join(send), ' '.join(recv))
        for err in (recv_err, send_err):
            if protocol.PROGRAM + ': ' in err:
                # The vault endpoint refused or failed: its own error class
                # (Fenced, NotYours, NoSlot, ...).
                raise protocol.error_from(err, what)
        # zfs-receive(8): a target changed since the incremental base is
        # Diverged (never forced with -F: a human settles it), a full pool
        # OutOfSpace (the receive keeps its resume token for a retry).
        cls = zfs.error_class(recv_err, exception.CommandFailed)
        raise cls(
            '%s | %s failed after %d bytes: %s%s%s'
            % (' '.join(send), ' '.join(recv), moved,
               failure or '', ' send: ' + send_err if send_err else '',
               ' recv: ' + recv_err if recv_err else ''),
            stderr=recv_err or send_err)
    return Result(moved, time.monotonic() - start)


def _ended(child, said, timeout):
    """(exit status, stderr text) of an end whose stream is over.

    ``said``: what it wrote to stderr already. The status is None if it
    did not exit within ``timeout`` seconds (it is then killed).
    """
    child.stdin = child.stdout = None  # closed by the caller
    try:
        err = child.communicate(timeout=timeout)[1]
    except Exception as e:
        if not executor.timed_out(e):
            raise
        _reap(child)
        return None, bytes(said).decode(errors='replace').strip()
    text = bytes(said + err).decode(errors='replace').strip()
    return child.returncode, text


def _reap(*children):
    """Kill and wait for ``children``; their pipes are closed after.

    An end stuck in the kernel (D state) does not exit even when killed:
    it is left after :data:`executor.REAP_TIMEOUT` seconds.
    """
    for child in children:
        child.kill()
    for child in children:
        try:
            child.wait(executor.REAP_TIMEOUT)
        except Exception as e:
            if not executor.timed_out(e):
                raise
            LOG.error('%s does not exit after SIGKILL', child.args)
        for stream in (child.stdin, child.stdout, child.stderr):
            if stream:
                try:
                    stream.close()
                except OSError:
                    pass


def relay(src, dest, stall_timeout=60, rate=None, progress=None,
          min_rate=0):
    """Move a stream from file descriptor ``src`` into ``dest`` (a file).

    What :func:`pipe` does between its two children, for a process that
    is itself one end (the vault endpoint feeding ``zfs recv`` from its
    SSH channel). ``dest`` is closed at the end of the stream.
    :param min_rate: bytes/second the stream must average over each
        ``stall_timeout`` seconds (:class:`Floor`); 0: any byte will do.
    :returns: bytes moved. :raises CommandFailed: a stall, or a stream
        slower than ``min_rate``.
    """
    try:
        return _relay(src, dest, Throttle(rate), stall_timeout, progress,
                      Floor(min_rate, stall_timeout))
    finally:
        dest.close()


class Floor(object):
    """Fails a stream that averages under ``rate`` bytes/second.

    Measured over windows of ``window`` seconds at least, as bytes arrive:
    a byte now and then resets no clock (a stall timeout alone counts a
    trickle as alive, and a slot would stay held by it).
    """

    def __init__(self, rate, window):
        self.rate = rate
        self.window = window
        self._start = time.monotonic()
        self._moved = 0

    def __call__(self, nbytes):
        """Count ``nbytes``. :raises CommandFailed: under the floor."""
        self._moved += nbytes
        elapsed = time.monotonic() - self._start
        if not self.rate or elapsed < self.window:
            return
        if self._moved < self.rate * elapsed:
            raise exception.CommandFailed(
                'stream too slow: %d bytes in %.0f s, under %d bytes/s'
                % (self._moved, elapsed, self.rate))
        self._start += elapsed
        self._moved = 0


def read_head(src, size, stall_timeout=60):
    """The first ``size`` bytes of the stream on file descriptor ``src``.

    Fewer if the stream ends before; the rest stays in ``src`` for
    :func:`relay`. :raises CommandFailed: no byte for ``stall_timeout``
    seconds.
    """
    head = b''
    while len(head) < size:
        _wait(src, False, stall_timeout, 'stream stalled')
        try:
            chunk = os.read(src, size - len(head))
        except BlockingIOError:
            continue
        if not chunk:
            break
        head += chunk
    return head


def _widen(fd):
    """Grow a pipe to BUFFER bytes (``F_SETPIPE_SZ``, fcntl(2)).

    64 KiB pipes wake the relay for every 64 KiB; 1 MiB ones sixteen
    times less often. Beyond ``/proc/sys/fs/pipe-max-size`` for a
    non-root user it fails, and the default size is kept.
    """
    try:
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, BUFFER)
    except OSError:
        pass


def _relay(src, dest, throttle, stall_timeout, progress, floor=None):
    """Move the stream from the sender's pipe into the receiver's.

    ``splice(2)`` moves the pages from pipe to pipe without copying them
    through this process. It is not patched by eventlet, so a receiver
    that died raises BrokenPipeError even in a monkey-patched process
    (whose green os.write would retry EPIPE forever, eventlet/green/os.py);
    there the pipes are non-blocking and select (green) does the waiting.
    """
    moved = 0
    out = dest.fileno()
    _widen(src)
    _widen(out)
    while True:
        # Both waits bounded: a sender or a receiver that stops moving
        # fails the stream (the receive keeps its resume token).
        _wait(src, False, stall_timeout, 'stream stalled')
        _wait(out, True, stall_timeout, 'receiver stalled')
        try:
            n = os.splice(src, out, BUFFER)
        except BlockingIOError:
            continue
        if not n:
            return moved
        moved += n
        if floor:
            floor(n)
        throttle(n)
        if progress:
            progress(moved)


#: Seconds between two questions to a stream's ``preempted`` callable.
PREEMPT_POLL = 1.0


def _await_grant(stderr, timeout, said, preempted=None):
    """Wait for :data:`protocol.SLOT_GRANTED` on an endpoint's ``stderr``.

    :param said: a bytearray; gets what else the endpoint wrote meanwhile
        (its refusal, if it ended instead), for :func:`pipe` to report.
    :param preempted: callable() -> bool, see :func:`pipe`.
    :raises CommandFailed: it ended first, or ``timeout`` seconds passed.
    :raises Preempted: ``preempted()`` said so first.
    """
    word = protocol.SLOT_GRANTED.encode() + b'\n'
    fd = stderr.fileno()
    deadline = time.monotonic() + timeout
    while word not in said:
        if preempted and preempted():
            raise exception.Preempted(
                'gave way to a caller waiting on the disk before the vault '
                'granted a transfer slot')
        left = deadline - time.monotonic()
        if left <= 0:
            raise exception.CommandFailed(
                'the vault granted no transfer slot in %ss' % timeout)
        if not select.select([fd], [], [],
                             min(left, PREEMPT_POLL) if preempted
                             else left)[0]:
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            raise exception.CommandFailed(
                'the vault ended the stream before it had a transfer slot')
        said += chunk
    at = said.index(word)
    del said[at:at + len(word)]


def _wait(fd, write, timeout, what):
    fds = [fd]
    ready = (select.select([], fds, [], timeout)[1] if write
             else select.select(fds, [], [], timeout)[0])
    if not ready:
        raise exception.CommandFailed('%s for %ss' % (what, timeout))
