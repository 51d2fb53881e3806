"""Inter-process locks that give up after a timeout.

``oslo_concurrency.lockutils.lock(external=True)`` waits forever; a lease or
flow lock held by a stuck process would then stop every later caller without
a word. :func:`lock` takes the same lock (the same semaphore within the
process, the same lock file across processes) without blocking, retries until
``timeout`` seconds have passed, and then raises :class:`LockTimeout`.
"""

import contextlib
import time

from oslo_concurrency import lockutils

from cinder_zfs_vault import exception


class LockTimeout(exception.Busy):
    """Another operation held the lock for longer than the timeout."""


@contextlib.contextmanager
def lock(name, timeout, lock_path=None, poll=0.1):
    """Hold the external lock ``name``, waiting at most ``timeout`` seconds.

    :param name: lockutils lock name (also the lock file's name).
    :param timeout: seconds to wait for the lock.
    :param lock_path: directory of the lock file (lockutils' ``lock_path``
        option when None).
    :param poll: seconds between attempts.
    :raises LockTimeout: the lock was not free within ``timeout``.
    """
    deadline = time.monotonic() + timeout
    held = contextlib.ExitStack()
    while True:
        try:
            held.enter_context(lockutils.lock(
                name, external=True, lock_path=lock_path, blocking=False,
                do_log=False))
            break
        except lockutils.AcquireLockFailedException:
            if time.monotonic() >= deadline:
                raise LockTimeout('%s is held by another operation (waited '
                                  '%ss)' % (name, timeout))
            time.sleep(poll)
    with held:
        yield
