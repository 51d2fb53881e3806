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

"""The status of a disk as one host sees it: typed data, not a view.

zrepl's ``report/``: the states a disk can be in (:class:`State`), the
record of one disk's status (:class:`DiskStatus`: state, lease, last
sync, lag, unsynced bytes, device) and the functions that build it from
the answers of the replica engine (compute_host/replica.py), the vault
(``Authority.disks``, vault_host/authority.py) and the orchestrator's
logbook (``Orchestrator.in_flight``, compute_host/flows.py). The
``zfs-vault`` CLI formats these records (cmd/cli/disk.py); nothing here
prints.
"""

import collections
import enum
import time

from cinder_zfs_vault import exception
from cinder_zfs_vault import validation

#: Prefix of this host's device-mapper devices of a disk (``zvault-<id>``,
#: and ``-snap``/``-merge`` stacked under it during a seed and cut-over).
DM_PREFIX = 'zvault-'
#: Prefix of a disk's zvols: the vault's and this host's replica
#: (``volume-<id>``, and its COW zvol ``-cow``).
VOLUME_PREFIX = 'volume-'


class State(str, enum.Enum):
    """States of a disk as seen from one host.

    A ``str``: each compares equal to (and prints, also as JSON) the word
    users see. The first five are the engine's (``ReplicaEngine.state``,
    compute_host/replica.py); 'syncing' is a sync flow of this host in its
    logbook, and 'remote' a disk leased to another host.
    """

    #: Nothing of the disk on this host.
    IN_VAULT = 'in vault'
    #: The device runs on the vault's iSCSI origin while the local copy
    #: fills.
    SEEDING = 'seeding'
    #: The device runs on the local replica.
    LOCAL = 'local'
    #: Non-sync mode: the device is read-write on the vault over iSCSI.
    DIRECT = 'direct'
    #: A replica here without a device: a detach under way.
    RELEASING = 'releasing'
    #: A sync flow of this host in flight.
    SYNCING = 'syncing'
    #: Leased to another host.
    REMOTE = 'remote'
    #: Its devices and datasets here could not be read (the row's problem
    #: says why).
    UNKNOWN = 'unknown'

    def __str__(self):
        return self.value

    def __format__(self, spec):
        return format(self.value, spec)

    @property
    def has_replica(self):
        """Whether a local replica holds writes not yet in the vault."""
        return self in (State.LOCAL, State.SYNCING, State.RELEASING)

    @property
    def has_device(self):
        """Whether the VM's device (``/dev/mapper/zvault-<id>``) is here."""
        return self not in (State.IN_VAULT, State.REMOTE, State.RELEASING,
                            State.UNKNOWN)


#: A flow in this host's logbook (running, or left by a crash until the
#: agent resumes it) names the state better than the devices do.
FLOW_STATES = {'sync': State.SYNCING, 'detach': State.RELEASING}

#: Looks at one disk on this host before its row reports why they failed,
#: and the pause between two (seconds). A flow of the running agent may
#: move the disk between two commands of one look (a device removed after
#: ``dmsetup info`` found it, a sync point pruned after it was listed):
#: the next look sees it settled.
LOOK_TRIES = 3
LOOK_PAUSE = 0.5

#: The status of one disk as one host sees it.
#:
#: ``volume_id``, ``dataset`` (the vault's zvol) and ``size`` (bytes, None
#: if unknown); ``state``, a :class:`State`; ``lease_owner`` (None if
#: unleased), ``generation`` and ``synced_guid`` of the lease;
#: ``last_sync``, epoch seconds of the newest sync point in the vault (or
#: None); ``lag``, whole seconds since then for a leased disk (else None);
#: ``unsynced_bytes``, written on this host's replica since that sync
#: point (None without one); ``device``, the VM's device path when this
#: host has it (else None).
DiskStatus = collections.namedtuple(
    'DiskStatus', 'volume_id dataset size state lease_owner generation '
                  'synced_guid last_sync lag unsynced_bytes device problem',
    defaults=(None,))
#: ``problem``: what the running agent failed to do with the disk, as it
#: keeps it (compute_host/service.py ``read_problems``): failures in a
#: row, the next try (epoch seconds) and the last error; or only an
#: ``error`` (the vault could not be asked); None if nothing.


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


def flows_by_volume(in_flight):
    """``{volume id: kind}`` of ``Orchestrator.in_flight()`` rows."""
    return {vid: kind for kind, vid, _state in in_flight}


def disk_status(engine, volume_id, disk, here, now, flow=None,
                problem=None):
    """The :data:`DiskStatus` of one disk.

    :param disk: the disk as ``Authority.disks`` has it (dataset, size,
        last_sync, lease).
    :param here: whether this host has a device or dataset of it; the
        engine is asked for the state only then (the others are in the
        vault as far as this host knows).
    :param now: epoch seconds the lag is counted to.
    :param flow: kind of this host's flow in flight on the disk, if any
        (``Orchestrator.in_flight``).
    :param problem: the agent's problem with it, if any (DiskStatus).
    """
    lease = disk['lease']
    state, unsynced, device = State.IN_VAULT, None, None
    if here:
        (state, _synced, unsynced, device), error = _look(
            engine, volume_id, flow)
        problem = problem or error
    elif lease.owner not in (None, engine.host):
        state = State.REMOTE
    lag = None
    if lease.owner is not None and disk['last_sync'] is not None:
        lag = max(0, int(now - disk['last_sync']))
    return DiskStatus(
        volume_id=volume_id, dataset=disk['dataset'], size=disk['size'],
        state=state, lease_owner=lease.owner, generation=lease.generation,
        synced_guid=lease.synced_guid, last_sync=disk['last_sync'],
        lag=lag, unsynced_bytes=unsynced, device=device,
        problem=problem if here else None)


def _look(engine, volume_id, flow, synced=False):
    """One disk as this host has it, looked at again while it moves.

    :param synced: also read the last sync point this host recorded
        (``ReplicaEngine.last_synced``, with its ``creation``, epoch
        seconds; a cut network's listing).
    :returns: ((state, last synced row or None, unsynced bytes, device),
        None), or, after :data:`LOOK_TRIES` failed looks, ((State.UNKNOWN,
        None, None, None), problem) with the last error.
    """
    for attempt in range(LOOK_TRIES):
        if attempt:
            time.sleep(LOOK_PAUSE)
        try:
            state = State(FLOW_STATES.get(flow, engine.state(volume_id)))
            last = None
            if synced and state.has_replica:
                last = engine.last_synced(volume_id)
            if last:
                last = dict(last, creation=int(engine.compute_zfs.get(
                    last['name'], ('creation',))['creation']))
            unsynced = (engine.unsynced_bytes(volume_id)
                        if state.has_replica else None)
        except (exception.NotFound, exception.CommandFailed) as e:
            error = e
            continue
        device = engine.names(volume_id).device if state.has_device \
            else None
        return (state, last, unsynced, device), None
    return (State.UNKNOWN, None, None, None), {
        'error': 'could not read its state here: %s' % error}


def disk_statuses(engine, disks, in_flight, now=None, problems=None):
    """:data:`DiskStatus` of every disk of ``disks``, by volume id.

    :param disks: ``{volume id: disk}`` of ``Authority.disks``.
    :param in_flight: callable returning ``Orchestrator.in_flight()``;
        called only if some disk is on this host (it opens the logbook).
    :param now: epoch seconds the lags are counted to; by default the
        time once this host's devices, datasets and flows are read.
    :param problems: ``{volume id: problem}`` of the running agent.
    :returns: list of :data:`DiskStatus`, sorted by volume id.
    """
    present, flows, now = _look_here(engine, in_flight, now)
    problems = problems or {}
    return [disk_status(engine, vid, disks[vid], vid in present, now,
                        flows.get(vid), problems.get(vid))
            for vid in sorted(disks)]


def _look_here(engine, in_flight, now):
    """(volume ids present here, their flows, now): one look at this host.

    The logbook is opened only if some disk is here.
    """
    present = local_presence(engine)
    flows = flows_by_volume(in_flight()) if present else {}
    return present, flows, time.time() if now is None else now


def local_statuses(engine, in_flight, reason, problems=None, now=None):
    """:data:`DiskStatus` of this host's disks, from what it knows alone.

    When the vault cannot be asked (a cut network): each disk with a trace
    here, its state, the last sync point the vault confirmed as this host
    recorded it (``ReplicaEngine.last_synced``: its GUID, its creation as
    the last sync, the lag since), the bytes written since (which go on
    growing) and the device. Lease and size are the vault's: unknown.

    :param reason: why the vault was not asked; every row's problem.
    :returns: list of :data:`DiskStatus`, sorted by volume id.
    """
    present, flows, now = _look_here(engine, in_flight, now)
    problems = problems or {}
    rows = []
    for vid in sorted(present):
        (state, synced, unsynced, device), error = _look(
            engine, vid, flows.get(vid), synced=True)
        last_sync = synced['creation'] if synced else None
        rows.append(DiskStatus(
            volume_id=vid, dataset=engine.names(vid).vault, size=None,
            state=state, lease_owner=None, generation=None,
            synced_guid=synced['guid'] if synced else None,
            last_sync=last_sync,
            lag=None if last_sync is None else max(0, int(now - last_sync)),
            unsynced_bytes=unsynced, device=device,
            problem=problems.get(vid) or error or {'error': reason}))
    return rows
