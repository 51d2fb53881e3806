# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at
#
#      http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS, WITHOUT
# WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied. See the
# License for the specific language governing permissions and limitations
# under the License.

"""Transfer slots of the vault: at most ``sync_workers`` streams at once.

img-storage's ``img_sync_workers`` bounded the transfers one NAS daemon ran;
here every stream into or out of the vault (seed sends and sync receives,
from every compute host) is a separate endpoint process, so the slots are
lock files on the vault host that those processes share:

* ``line``: a waiter holds it while it looks for a free slot, so only the
  head of the line competes and the others wait their turn (first come,
  first served, as far as the kernel wakes ``flock(2)`` waiters in order);
* ``slot-<i>`` for ``i < limit``: held with ``flock(2)`` for the whole
  stream. The kernel drops the lock when the holder exits, so a killed
  endpoint (a compute host that vanished mid-stream: sshd kills its
  command) never leaks a slot;
* ``host-<name>-<j>`` for ``j < per_host``: a host's own tokens, taken
  before it joins the line, so that one host holds at most ``per_host``
  slots and its other streams wait behind its own, not in everybody's
  line: one host (a trickling stream, many disks) cannot take every slot
  (issue 21, 1). By default ``per_host`` is one less than the slots they
  may use, so one is always left to the other hosts;
* **urgent** transfers, the syncs a caller waits on (a detach's final
  sync, a snapshot's sync point: cinder-volume's RPC gives up after
  ``zfs_vault_agent_detach_timeout``), must not wait behind seeds paced
  for hours (issue 21, 10). The last slot, ``slot-<limit-1>``, is theirs
  alone (when there are two or more), they may take any other, and they
  go ahead of the line: a waiter of the line lets them look first
  (``urgent``, held while one looks). One host has one urgent transfer
  at a time (``urgent-<name>``): a host cannot take the kept slot for its
  periodic syncs by calling them urgent.

Each grant and release is appended to ``slots.log`` (time, event, slots
busy, who), which operators and the benchmarks read.
"""

import contextlib
import errno
import fcntl
import os
import time

from oslo_log import log as logging

from cinder_zfs_vault import exception

LOG = logging.getLogger(__name__)


class NoSlot(exception.Busy):
    """No transfer slot became free within the timeout."""


def _try_lock(fd):
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EACCES):
            return False
        raise


def _shared(limit):
    """Of ``limit`` slots, those seeds and periodic syncs may use.

    All but the one kept for urgent transfers (none kept when there is one).
    """
    return limit - 1 if limit > 1 else 1


class Slots(object):
    """``limit()`` transfer slots shared by every process on the vault host.

    :param directory: where the lock files live (created if missing).
    :param limit: callable() -> how many slots (read at each request, so
        an operator's ``vault set --sync-workers`` applies at once).
    :param timeout: seconds a request waits for a slot before
        :class:`NoSlot`.
    :param poll: seconds between two looks at the slots.
    :param per_host: callable() -> how many slots one host may hold at
        once; 0 (or None): one less than ``limit()``, at least 1.
    """

    def __init__(self, directory, limit, timeout=3600, poll=0.2,
                 per_host=None):
        self.directory = directory
        self.limit = limit
        self.timeout = timeout
        self.poll = poll
        self.per_host = per_host or (lambda: 0)
        os.makedirs(directory, mode=0o700, exist_ok=True)

    def _limit(self):
        return max(1, int(self.limit()))

    def host_limit(self, shared=None):
        """Slots one host may hold at once (see :attr:`per_host`).

        :param shared: the slots seeds and periodic syncs may use
            (:func:`_shared`), if the caller read the limit already.
        """
        if shared is None:
            shared = _shared(self._limit())
        return int(self.per_host()) or max(1, shared - 1)

    def _open(self, name):
        return os.open(os.path.join(self.directory, name),
                       os.O_RDWR | os.O_CREAT, 0o600)

    @contextlib.contextmanager
    def slot(self, who, host=None, urgent=False):
        """Hold one slot for ``who`` (a text for the log) while in the block.

        :param host: the asking host (a validated host name): it holds at
            most :meth:`host_limit` slots at once, and one urgent one.
        :param urgent: a transfer a caller waits on: any slot, the kept
            one included, ahead of the line.
        :raises NoSlot: none was free within the timeout (nothing held).
        """
        deadline = time.monotonic() + self.timeout
        limit = self._limit()  # a zfs get: read once per request
        own = None
        if host is not None:
            tokens = (['urgent-%s' % host] if urgent else
                      ['host-%s-%d' % (host, j)
                       for j in range(self.host_limit(_shared(limit)))])
            own = self._first_free(tokens, deadline, who)
        try:
            fd = self._take(who, deadline, limit, urgent)
        except BaseException:
            if own is not None:
                os.close(own)
            raise
        self._log('grant', who)
        try:
            yield
        finally:
            os.close(fd)  # drops the flock
            if own is not None:
                os.close(own)
            self._log('release', who)

    def _take(self, who, deadline, limit, urgent):
        if urgent:
            # The urgent line: ahead of the other while one of it looks;
            # the kept slot first.
            line = self._first_free(['urgent'], deadline, who)
            names = ['slot-%d' % i for i in reversed(range(limit))]
            yield_to = None
        else:
            line = self._first_free(['line'], deadline, who)
            names = ['slot-%d' % i for i in range(_shared(limit))]
            yield_to = 'urgent'
        try:
            return self._first_free(names, deadline, who, yield_to)
        finally:
            os.close(line)  # the next in line may look now

    def _first_free(self, names, deadline, who, yield_to=None):
        """The fd of the first of ``names`` this process could lock.

        :param yield_to: a lock file: while another process holds it, this
            one does not look (an urgent transfer looks first).
        """
        while True:
            for name in names if not self._held(yield_to) else ():
                fd = self._open(name)
                if _try_lock(fd):
                    return fd
                os.close(fd)
            if time.monotonic() >= deadline:
                raise NoSlot('no transfer slot free on the vault for %s '
                             'in %ss' % (who, self.timeout))
            time.sleep(self.poll)

    def _held(self, name):
        """Whether another process holds lock file ``name`` now."""
        if name is None:
            return False
        fd = self._open(name)
        try:
            if _try_lock(fd):
                fcntl.flock(fd, fcntl.LOCK_UN)
                return False
            return True
        finally:
            os.close(fd)

    def busy(self):
        """How many slots are held now (a snapshot, for status and logs)."""
        count = 0
        for name in os.listdir(self.directory):
            if not name.startswith('slot-'):
                continue
            count += self._held(name)
        return count

    def _log(self, event, who):
        busy = self.busy()
        LOG.info('transfer slot %s for %s (%d busy)', event, who, busy)
        with open(os.path.join(self.directory, 'slots.log'), 'a') as f:
            f.write('%.3f %s %d %s\n' % (time.time(), event, busy, who))
