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

"""2. Seed: a full ``zfs send`` of a vault sync point into the local pool.

Resumable (``zfs receive -s``): a cut stream goes on from its token.
"""

import collections
import contextlib
import threading

from oslo_log import log as logging

from cinder_zfs_vault.compute_host import phases
from cinder_zfs_vault.compute_host import vault_client
from cinder_zfs_vault import exception
from cinder_zfs_vault import lease as leaselib
from cinder_zfs_vault import sync_points as points
from cinder_zfs_vault import transfer

LOG = logging.getLogger(__name__)

#: A seed needs its stream's bytes plus 1/ROOM_MARGIN of them (the
#: replica's metadata) and ROOM_FLOOR bytes free on the compute pool
#: (Seed._room). The COW zvol beside it has its room reserved (attach.py).
ROOM_MARGIN = 16
ROOM_FLOOR = 64 * 1024 * 1024


class Room(object):
    """Bytes of the compute pool promised to the seeds in flight.

    ``available`` counts what a seed's receive has written so far, not
    what it will write: two seeds checked against it at once each found
    room the other was about to take (issue 21, 5). Each seed holds its
    stream's bytes here while it runs; the next one's check counts them.
    Shared by the threads of one agent.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._held = {}

    @contextlib.contextmanager
    def held(self, volume_id, free, needed, refuse):
        """Hold ``needed`` bytes for ``volume_id`` while the block runs.

        :param free: bytes available on the pool now.
        :param refuse: callable(free after the other seeds) -> the
            exception raised when ``needed`` does not fit.
        """
        with self._lock:
            left = free - sum(b for v, b in self._held.items()
                              if v != volume_id)
            if left < needed:
                raise refuse(left)
            self._held[volume_id] = needed
        try:
            yield
        finally:
            with self._lock:
                self._held.pop(volume_id, None)


class Urgency(object):
    """The disks a caller waits on, and their running seeds' streams.

    A seed is paced by ``download_rate`` so that it leaves the vault's
    disks and the network to others. A caller that waits on it (a
    snapshot of the attached volume, its detach: a user waits, and the
    driver's RPC call has a timeout) lifts that limit, also of a stream
    already under way: its :class:`~cinder_zfs_vault.transfer.Throttle`'s
    rate is read at every chunk. A periodic sync of the disk still queued
    for a vault slot gives way to such a caller (:meth:`waited_on`,
    flows.py). Shared by the threads of one agent.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._waiting = collections.Counter()
        self._streams = {}

    @contextlib.contextmanager
    def waiting(self, volume_id):
        """While the caller's block runs, the disk's seeds go unthrottled."""
        with self._lock:
            self._waiting[volume_id] += 1
            throttle = self._streams.get(volume_id)
            if throttle is not None and throttle.rate:
                LOG.info('%s: a caller waits on its seed: the stream goes '
                         'on unthrottled (was %d bytes/s)', volume_id,
                         throttle.rate)
                throttle.rate = None
        try:
            yield
        finally:
            with self._lock:
                self._waiting[volume_id] -= 1
                if not self._waiting[volume_id]:
                    del self._waiting[volume_id]

    def waited_on(self, volume_id):
        """Whether a caller waits on the disk now."""
        with self._lock:
            return self._waiting[volume_id] > 0

    @contextlib.contextmanager
    def stream(self, volume_id, rate):
        """The Throttle of a seed's stream.

        :param rate: bytes/second (0 or None: unlimited); unlimited anyway
            while a caller waits on the disk (:meth:`waiting`).
        """
        with self._lock:
            throttle = transfer.Throttle(
                None if self._waiting[volume_id] else rate)
            self._streams[volume_id] = throttle
        try:
            yield throttle
        finally:
            with self._lock:
                self._streams.pop(volume_id, None)


class Seed(object):
    """The seed phase of the replica engine (replica.py).

    A mixin: it uses the engine's parts (``vault``, ``compute_zfs``, ``dm``,
    ``connector``, ``settings``) and its other phases.
    """

    def _seeded(self, n):
        """True when the local replica holds a complete received snapshot."""
        try:
            return bool(points.of(self.compute_zfs.snapshots(n.local)))
        except exception.NotFound:
            return False

    def seed(self, volume_id, rate=None, progress=None):
        """Copy the vault zvol into the local pool behind the running VM.

        A full ``zfs send`` of a new vault sync point into a resumable
        receive; a cut stream is resumed from its token on the next call.
        :param rate: bytes/second; 0 is unlimited, None the download limit
            in settings.
        :param progress: callable(bytes_done, bytes_expected).
        :returns: :data:`~cinder_zfs_vault.transfer.Result`.
        """
        n = self.names(volume_id)
        if self._seeded(n):
            return transfer.Result(0, 0.0)
        generation = self._generation(n)
        token = transfer.resume_token(self.compute_zfs, n.local)
        if token:
            send = self.vault.send_argv(n.volume_id, generation, token=token)
            expected = 0
        else:
            # The vault picks the sync point (one the zvol was not written
            # after) and holds it while the replica is out.
            seed = self.vault.seed(n.volume_id, generation)
            send = self.vault.send_argv(n.volume_id, generation,
                                        snap=seed['snap'])
            expected = seed['bytes']
        with self._room(n, expected):
            result = self._receive(n, send, expected, rate, progress)
        received = self.compute_zfs.snapshots(n.local)
        vault_guids = {s['guid'] for s in
                       self.vault.info(n.volume_id)['snapshots']}
        if not received or received[-1]['guid'] not in vault_guids:
            raise exception.Diverged('%s: received snapshot not found on '
                                     'the vault' % n.local)
        # The generation this host holds moves from the COW to the replica.
        self.compute_zfs.set(n.local, {leaselib.GENERATION: generation})
        return result

    def _receive(self, n, send, expected, rate, progress):
        """The seed's stream into the local replica, resumable."""
        try:
            with self.urgency.stream(
                    n.volume_id,
                    self._rate(n, 'download_rate', rate)) as throttle:
                return vault_client.pipe(
                    send,
                    self.compute_zfs.stream_argv(transfer.recv_argv(n.local)),
                    rate=throttle,
                    stall_timeout=self.settings.stall_timeout,
                    granted_by='send',
                    slot_timeout=self.settings.slot_timeout,
                    progress=phases.reporter(progress, expected))
        except exception.OutOfSpace:
            # The partial receive holds space others need: give it back.
            # The seed starts over once there is room.
            self.compute_zfs.abort_receive(n.local)
            raise

    def _room(self, n, expected):
        """Room for a seed on the compute pool, held while it runs.

        The stream's bytes plus :data:`ROOM_MARGIN` of them and
        :data:`ROOM_FLOOR`, beside what the other seeds in flight hold
        (:class:`Room`). A resumed stream (``expected`` 0) needs the floor.
        :raises OutOfSpace: no room; nothing was received.
        """
        free = int(self.compute_zfs.get(self.compute_root,
                                        ('available',))['available'])
        needed = expected + expected // ROOM_MARGIN + ROOM_FLOOR

        def refuse(left):
            return exception.OutOfSpace(
                '%s: the seed of %s needs %d bytes on %s, which has %d free '
                'beside the seeds in flight' % (
                    self.host, n.vault, needed, self.compute_root, left))
        return self.seed_room.held(n.volume_id, free, needed, refuse)

    def _rate(self, n, kind, rate, info=None):
        """Bytes/second for a transfer; 0 or None is unlimited.

        The caller's rate, else the engine's setting, else the volume's
        attribute (which falls back to the vault's; attributes.py), from
        ``info`` when the caller has the vault's answer already.
        """
        for value in (rate, getattr(self.settings, kind)):
            if value is not None:
                return value
        return (info or self.vault.info(n.volume_id))[kind]
