"""Replica benchmarks (issue 3), side by side in one lab run of hosts.

They run on compute-1 of a lab of hosts (``--hosts vault,compute-1``): the
replica engine there reaches the vault only through its SSH endpoint, and
what the benchmark itself does on the vault (make and fill disks, run its
side of the peers' pipes, check what landed) goes to the vault guest
(:func:`tools.labkit.vault_lab`, :func:`tools.labkit.vault`, the lab's
root SSH). Every transfer crosses the lab's network.

Numbers are printed, not asserted; but every write a benchmark makes is
checked in the vault afterwards, and a lost write fails the run, as does
anything left behind on either host.

1. Time to a usable device for a disk full of random data: lazy
   (``ReplicaEngine.attach``, then the first and last MiB read) against
   copy-first (``ssh vault zfs send | zfs recv`` of a snapshot into the
   compute pool, then the same reads).
2. Cut-over I/O pause under a writer: the two table swaps
   ``ReplicaEngine.cutover`` reports and the worst write latency a
   :class:`~tools.labkit.VerifyingWriter` saw across it (what a VM feels:
   its writes wait in the suspended device), median and worst of N rounds;
   against the floor, measured in the same rounds: one bare ``dmsetup
   suspend``/``resume`` of a ``linear`` device over a local zvol, under the
   same writer.
3. Sync bytes against dirty bytes: D MiB written at random 4 KiB-aligned
   offsets (and D MiB written twice over the same blocks), the replica's
   ``written`` before the sync and the stream ``ReplicaEngine.sync`` sent.
4. Sync throughput on the same snapshots, compute to vault: ours against
   the raw ``zfs send | ssh vault zfs recv`` pipe in bash and syncoid
   pushing over SSH, each into a fresh copy of the same base on the vault,
   so that all move the same increment (checked by GUID).
5. Many disks at once: N disks attached at once (lazily: usable through
   the origin), then all seeded at once with the vault's ``sync_workers``
   at 4: the most transfers the vault ran at once, the time until every
   device was usable and until every seed had landed. A request that
   fails under the load is tried again, and counted.

Run: ``tools/zfs-lab bench --hosts vault,compute-1 replica [--quick]
[--sizes 1,8] [--pauses 20] [--disks 20]``. Under TCG a stream between
the guests moves about 2.5 MiB/s, so the copy-first copy of a disk takes
about 7 minutes a GiB: ``--sizes 1,4`` spares the default run almost an
hour of its two and a half (``ZFS_LAB_TIMEOUT`` must allow for it).
"""

import argparse
import functools
import os
import random
import shlex
import statistics
import sys
import time
import uuid

from cinder_zfs_vault.compute_host import dm as dmlib
from cinder_zfs_vault import executor
from cinder_zfs_vault import sync_points
from cinder_zfs_vault import transfer
from tools import bench
from tools import labkit

MiB = 1024 ** 2
GiB = 1024 ** 3
BLOCK = 4096
#: Size of the disk of benchmarks 2 to 5, and of its data.
SMALL_DISK = GiB
SMALL_DATA = 16 * MiB
#: Writes the writer makes before a cut-over, and after it.
WARM_WRITES = 100
#: The vault's transfer slots while many disks seed (benchmark 5).
MANY_WORKERS = 4
#: The dm device of the pause floor (benchmark 2).
FLOOR = 'bench-floor'
PARTS = ('device', 'pause', 'throughput', 'bytes', 'many')


class DataLost(AssertionError):
    """The vault does not hold what the benchmark wrote."""


def sh(*argv):
    """Run a command here, on the compute host; its stdout."""
    return labkit.run(*argv)


#: Run a command on the vault host as root (the lab's SSH); its stdout.
on_vault = functools.partial(labkit.on_host, 'vault')


def over_ssh(argv):
    """``argv`` run on the vault through the lab's root SSH (a pipe end)."""
    return ['ssh', 'vault', '--', shlex.join(argv)]


def zvol(dataset):
    """The device of a zvol of this (compute) host."""
    return labkit.wait_for('/dev/zvol/' + dataset)


def vault_zvol(dataset):
    """The device of a vault zvol, a path on the vault host."""
    return labkit.vault_lab().zvol(dataset.split('/', 1)[1])


def shell_pipe(send, recv, host=None):
    """``send | recv`` run by bash: a kernel pipe, nothing in between.

    :param host: run it there (the lab's SSH) rather than here.
    """
    script = 'set -o pipefail; %s | %s' % (shlex.join(send),
                                           shlex.join(recv))
    if host:
        labkit.on_host(host, 'bash', '-c', script, timeout=3600)
    else:
        labkit.run('bash', '-c', script, timeout=3600)


def fio_fill(device, size):
    """Write ``size`` bytes of incompressible data to a vault ``device``.

    fio's buffers are random; O_DIRECT 1 MiB writes, 8 in flight: about
    twice the speed of buffered writes into a zvol under TCG.
    """
    on_vault('fio', '--name=fill', '--filename=' + device, '--rw=write',
             '--bs=1M', '--direct=1', '--ioengine=libaio', '--iodepth=8',
             '--size=%d' % size, '--output=/dev/null', timeout=3600)


def mib(nbytes):
    return nbytes / float(MiB)


def ratio(value, base):
    return value / base if base else float('nan')


def table(title, header, rows):
    """Print ``rows`` (tuples of str or float) under ``header``, aligned."""
    cells = [list(header)] + [[('%.3f' % c if isinstance(c, float) else
                                str(c)) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    print('\n== ' + title)
    for row in cells:
        print('  '.join([row[0].ljust(widths[0])] +
                        [c.rjust(w) for c, w in zip(row[1:], widths[1:])]))


def at_once(fn, items, start=None, timeout=3600):
    """Call ``fn(item)`` for every item, each in its own thread, at once.

    :param start: ``time.monotonic()`` the times count from (default: now).
    :returns: {item: seconds from ``start`` until its call returned}.
    :raises: the first error a call raised, once every call has ended.
    """
    start = start or time.monotonic()
    done = {}
    errors = []

    def call(item):
        try:
            fn(item)
            done[item] = time.monotonic() - start
        except Exception as e:
            errors.append(e)

    labkit.run_all(call, [(item,) for item in items], timeout)
    if errors:
        print('%d of %d calls of %s failed: %s'
              % (len(errors), len(items), fn.__name__,
                 '; '.join(str(e) for e in errors)), flush=True)
        raise errors[0]
    if len(done) < len(items):
        raise TimeoutError('%d of %d calls of %s still running after %ss'
                           % (len(items) - len(done), len(items),
                              fn.__name__, timeout))
    return done


class Disks(object):
    """Vault disks for the benchmarks: clones of filled masters.

    Filling a zvol is the slow part under TCG, so each master is filled once
    and every disk is a clone of its snapshot. A full ``zfs send`` of a
    clone carries all of its data, so seeds and copies still move every
    byte. The masters and disks live on the vault host.
    """

    def __init__(self, engine):
        self.engine = engine
        self.vault = labkit.vault()
        self.zfs = self.vault.zfs

    def master(self, name, size, fill):
        """Create ``vault/bench-<name>``, fill it, snapshot it.

        :param fill: callable(device path on the vault).
        :returns: (snapshot name, seconds the fill took).
        """
        dataset = 'vault/bench-' + name
        self.zfs.create_volume(dataset, size, sparse=True)
        took = bench.timed(fill, vault_zvol(dataset))
        self.zfs.snapshot(dataset + '@filled')
        return dataset + '@filled', took

    def new(self, master):
        """A new volume id whose vault zvol is a clone of ``master``.

        It is granted to the engine's host, as an operator grants it.
        """
        volume_id = str(uuid.uuid4())
        self.zfs.clone(master, self.engine.names(volume_id).vault)
        self.vault.grant(volume_id, self.engine.host)
        return volume_id

    def destroy(self, dataset, zfs=None):
        """Destroy ``dataset`` and its snapshots, holds released first.

        :param zfs: the ZFS layer of the host holding it (default: the
            vault's).
        """
        zfs = zfs or self.zfs
        if not zfs.exists(dataset):
            return
        for snap in zfs.snapshots(dataset):
            zfs.release(snap['name'], sync_points.HOLD_TAG)
        zfs.destroy(dataset, recursive=True)

    def drop(self, volume_id):
        """Destroy a volume's vault zvol and anything of it on compute."""
        n = self.engine.names(volume_id)
        self.destroy(n.local, self.engine.compute_zfs)
        self.destroy(n.vault)

    def drop_unwritten(self, volume_id):
        """Drop a lazily attached volume nothing was written to.

        ``detach`` would seed and sync the whole disk first, minutes for
        nothing; breaking the lease lets ``discard_fenced`` take the device,
        iSCSI session, COW zvol and replica down instead.
        """
        labkit.vault().break_lease(volume_id)
        self.engine.discard_fenced(volume_id)
        self.drop(volume_id)


def local_ends(device, size):
    """Digests of the first and the last MiB of a local ``device``."""
    return (labkit.digest(labkit.read_at(device, 0, MiB)),
            labkit.digest(labkit.read_at(device, size - MiB, MiB)))


def vault_ends(device, size):
    """:func:`local_ends` of a device on the vault host."""
    lab = labkit.vault_lab()
    return lab.digest(device, 0, MiB), lab.digest(device, size - MiB, MiB)


def check_ends(got, expected, what):
    if got != expected:
        raise DataLost('%s: the device does not read as the disk' % what)


def lazy_device(engine, volume_id, size, expected):
    """Attach lazily and read both ends through the dm device."""
    check_ends(local_ends(engine.attach(volume_id), size), expected, 'lazy')


def copy_first_device(engine, volume_id, size, expected):
    """Copy the whole disk into the compute pool, then read both ends.

    ``ssh vault zfs send | zfs recv``, a kernel pipe through SSH.
    """
    n = engine.names(volume_id)
    snap = n.vault + '@copy-first'
    labkit.vault().zfs.snapshot(snap)
    shell_pipe(over_ssh(transfer.send_argv(snap)),
               transfer.recv_argv(n.local))
    check_ends(local_ends(zvol(n.local), size), expected, 'copy-first')


def bench_device(engine, disks, sizes):
    """1. Time to a usable device, lazy against copy-first."""
    rows = []
    for size in sizes:
        master, fill = disks.master('%dg' % size, size * GiB,
                                    lambda dev, b=size * GiB: fio_fill(dev, b))
        print('filled a %d GiB disk with random data in %.1f s (%.1f MiB/s)'
              % (size, fill, size * 1024 / fill))
        expected = vault_ends(vault_zvol(master.split('@')[0]), size * GiB)
        volume_id = disks.new(master)
        lazy = bench.timed(lazy_device, engine, volume_id, size * GiB,
                           expected)
        disks.drop_unwritten(volume_id)
        volume_id = disks.new(master)
        copy = bench.timed(copy_first_device, engine, volume_id,
                           size * GiB, expected)
        disks.drop(volume_id)
        disks.destroy(master.split('@')[0])
        rows += [('%d GiB' % size, 'lazy', lazy, 1.0),
                 ('%d GiB' % size, 'copy-first', copy, ratio(copy, lazy))]
    table('time to a usable device on compute-1 (start -> first and last '
          'MiB read), seconds', ('size', 'method', 'seconds', 'x lazy'), rows)
    return rows


def small_master(disks):
    """The 1 GiB disk with 16 MiB of data that benchmarks 2 to 5 clone."""
    return disks.master('small', SMALL_DISK,
                        lambda dev: fio_fill(dev, SMALL_DATA))[0]


def seeded(engine, disks, master):
    """A new disk, attached and seeded: ready for its cut-over.

    :returns: volume id, device, {phase: seconds}.
    """
    volume_id = disks.new(master)
    start = time.monotonic()
    device = engine.attach(volume_id)
    attached = time.monotonic()
    engine.seed(volume_id)
    return volume_id, device, {'attach': attached - start,
                               'seed': time.monotonic() - attached}


def closed():
    """Let udev close the device before ``detach`` checks it is unused.

    A table swap's resume sends a change event, and udev opens the device
    to probe it: ``detach`` right after the writer stops can meet that open.
    """
    sh('udevadm', 'settle', '-t', '30')


def vault_verify(volume_id, engine, writer):
    """:raises DataLost: the vault zvol misses one of ``writer``'s writes."""
    vault = vault_zvol(engine.names(volume_id).vault)
    bad = labkit.vault_lab().verify(vault, writer.last)
    if bad:
        raise DataLost('cut-over round: %d blocks lost in %s on the vault, '
                       'e.g. %s' % (len(bad), vault, bad[:5]))


def pause_round(engine, disks, master):
    """One cut-over with a writer on the device; its writes are verified.

    The writer runs from before the cut-over to after it, never held: its
    writes in flight wait in the suspended device.
    :returns: dict: ``pauses`` (the two swaps, seconds), ``latency`` (the
        writer's worst write, seconds), ``writes``, and the seconds of
        each phase.
    :raises DataLost: the vault misses a write.
    """
    volume_id, device, phases = seeded(engine, disks, master)
    writer = labkit.VerifyingWriter(device, blocks=4096).start()
    try:
        writer.wait_writes(WARM_WRITES, timeout=120)
        start = time.monotonic()
        pauses = engine.cutover(volume_id)
        phases['cutover'] = time.monotonic() - start
        writer.wait_writes(writer.writes + WARM_WRITES, timeout=120)
    finally:
        writer.stop()
    closed()
    start = time.monotonic()
    engine.detach(volume_id)
    phases['detach'] = time.monotonic() - start
    vault_verify(volume_id, engine, writer)
    disks.drop(volume_id)
    return dict(phases, pauses=pauses, latency=writer.max_latency(),
                writes=writer.writes)


def floor_device(engine):
    """A dm ``linear`` device over a new local zvol: the pause floor's.

    :returns: its path.
    """
    dataset = engine.compute_root + '/' + FLOOR
    engine.compute_zfs.create_volume(dataset, SMALL_DISK, sparse=True)
    engine.dm.create(FLOOR, dmlib.linear_table(dmlib.sectors(SMALL_DISK),
                                               zvol(dataset)))
    return engine.dm.path(FLOOR)


def drop_floor(engine):
    closed()
    engine.dm.remove(FLOOR)
    engine.compute_zfs.destroy(engine.compute_root + '/' + FLOOR)


def floor_round(engine, device):
    """One bare ``dmsetup suspend``/``resume`` of the floor device.

    Under the same writer as a cut-over round, and timed as the engine
    times its swaps: from the suspend's return to the resume's. The
    processes of ``dmsetup``, as an operator runs them (the engine swaps
    in its own process, through libdevmapper).
    :returns: (seconds suspended, the writer's worst write latency).
    """
    bare = dmlib.DeviceMapper(executor.LocalExecutor())
    writer = labkit.VerifyingWriter(device, blocks=4096).start()
    try:
        writer.wait_writes(WARM_WRITES, timeout=120)
        bare.suspend(FLOOR)
        start = time.monotonic()
        bare.resume(FLOOR)
        pause = time.monotonic() - start
        writer.wait_writes(writer.writes + WARM_WRITES, timeout=120)
    finally:
        writer.stop()
    bad = writer.verify(device)
    if bad:
        raise DataLost('floor round: %d blocks lost, e.g. %s'
                       % (len(bad), bad[:5]))
    return pause, writer.max_latency()


def bench_pause(engine, disks, master, rounds):
    """2. Cut-over I/O pause under a writer, median and worst; the floor.

    Each round runs the floor (a bare suspend/resume) and then a cut-over,
    so both meet the same conditions.
    """
    results = []
    device = floor_device(engine)
    try:
        for i in range(rounds):
            floor, floor_latency = floor_round(engine, device)
            r = pause_round(engine, disks, master)
            r.update(floor=floor, floor_latency=floor_latency)
            results.append(r)
            print('round %2d: floor %.3f s (worst write %.3f s); attach '
                  '%.1f s, seed %.1f s, cutover %.1f s (pauses %s s), '
                  'detach %.1f s; %d writes, worst %.3f s, all in the vault'
                  % (i + 1, floor, floor_latency, r['attach'], r['seed'],
                     r['cutover'],
                     ' + '.join('%.3f' % p for p in r['pauses']),
                     r['detach'], r['writes'], r['latency']))
    finally:
        drop_floor(engine)

    def of(key, index=None):
        return [r[key] if index is None else r[key][index] for r in results]

    floor = of('floor')
    floor_latency = of('floor_latency')
    # (name, values, the floor values they compare with, or None)
    series = (('snapshot -> merge swap', of('pauses', 0), floor),
              ('merge -> linear swap', of('pauses', 1), floor),
              ('floor: bare dmsetup suspend/resume', floor, floor),
              ('cutover() call', of('cutover'), None),
              ('writer worst write latency', of('latency'), floor_latency),
              ('floor: writer worst write latency', floor_latency,
               floor_latency),
              # What the VM feels against what the engine reports.
              ('latency / (swap 1 + swap 2)',
               [r['latency'] / sum(r['pauses']) for r in results], None))
    rows = []
    for name, values, base in series:
        row = (name, statistics.median(values), max(values))
        if base:
            row += (ratio(statistics.median(values),
                          statistics.median(base)),
                    ratio(max(values), max(base)))
        else:
            row += ('-', '-')
        rows.append(row)
    table('cut-over I/O pause, %d rounds, a writer running through it '
          '(O_DIRECT 4 KiB writes, at most 200/s, not held: writes wait in '
          'the suspended device); floor: one bare suspend/resume of a dm '
          'linear over a local zvol per round, same writer, timed as the '
          'swaps (suspended -> resumed); seconds, ratio rows and columns '
          'aside; every write verified in the vault' % rounds,
          ('', 'median', 'worst', 'median x floor', 'worst x floor'), rows)
    return results


class Written(object):
    """What a benchmark wrote: offset -> (size, digest of the data)."""

    def __init__(self):
        self.digests = {}

    def write(self, device, offsets, size, passes=1):
        """Write ``size`` random bytes at each offset, ``passes`` times."""
        fd = os.open(device, os.O_WRONLY)
        try:
            for _ in range(passes):
                data = os.urandom(size * len(offsets))
                for i, offset in enumerate(offsets):
                    chunk = data[i * size:(i + 1) * size]
                    os.pwrite(fd, chunk, offset)
                    self.digests[offset] = (size, labkit.digest(chunk))
            os.fsync(fd)
        finally:
            os.close(fd)

    def verify_vault(self, path):
        """Offsets where the vault's ``path`` differs from the last write.

        [] is good. The digests are taken on the vault, in one call.
        """
        items = sorted(self.digests.items())
        got = labkit.vault_lab().digests(
            path, [(offset, size) for offset, (size, _) in items])
        return [offset for (offset, (_, digest)), have in zip(items, got)
                if have != digest]


def offsets(rng, count, size, start, end):
    """``count`` distinct ``size``-aligned offsets in [start, end)."""
    slots = rng.sample(range((end - start) // size), count)
    return [start + slot * size for slot in slots]


def dirty_then_sync(engine, volume_id, device, written, places, size,
                    passes):
    """Write, then sync; :returns: (``written`` before, SyncResult)."""
    written.write(device, places, size, passes)
    sh('zpool', 'sync', 'compute')  # ``written`` counts synced txgs
    dirty = engine.unsynced_bytes(volume_id)
    return dirty, engine.sync(volume_id)


def bench_bytes(engine, volume_id, device, written, rng, dirty_mib):
    """3. Sync bytes against dirty bytes (first half of the disk)."""
    count = dirty_mib * MiB // BLOCK
    places = offsets(rng, 2 * count, BLOCK, 0, SMALL_DISK // 2)
    rows = []
    for name, chunk, passes in (('random 4 KiB', places[:count], 1),
                                ('same blocks twice', places[count:], 2)):
        dirty, result = dirty_then_sync(engine, volume_id, device, written,
                                        chunk, BLOCK, passes)
        data = dirty_mib * MiB
        rows.append((name, mib(data), mib(data * passes), mib(dirty),
                     mib(result.bytes), ratio(result.bytes, data),
                     ratio(result.bytes, dirty)))
    volblocksize = engine.compute_zfs.get(engine.names(volume_id).local,
                                          ('volblocksize',))['volblocksize']
    table('sync bytes against dirty bytes, MiB (D: distinct data written; '
          'volblocksize %s bytes)' % volblocksize,
          ('case', 'D', 'written by app', 'zfs written', 'stream',
           'stream/D', 'stream/written'), rows)
    return rows


def syncoid(source, target):
    """syncoid pushing from this host's pool to the vault over SSH.

    Sending exactly what we send: no sync snapshot of its own (the
    increment ends at the newest snapshot), ``-L -c`` as ours, no
    compression of its own in the pipe (the stream is compressed blocks
    already), ``recv -u`` and no rollback of the target (``recv -s`` is
    its default); quiet, so no pv in the pipe (mbuffer stays on both ends,
    as syncoid runs it).
    :returns: syncoid's own command line for the transfer.
    """
    out = sh('syncoid', '--debug', '--no-sync-snap',
             '--no-privilege-elevation', '--quiet', '--no-rollback',
             '--compress=none', '--sendoptions=L c', '--recvoptions=u',
             source, 'root@vault:' + target)
    return [line for line in out.splitlines() if 'zfs send ' in line
            and ' | ' in line]


def bench_throughput(engine, disks, volume_id, device, written, rng,
                     increment_mib):
    """4. Sync throughput: ours, the raw pipe and syncoid, same increment."""
    n = engine.names(volume_id)
    base = sync_points.newest_common(
        engine.compute_zfs.snapshots(n.local),
        labkit.vault().zfs.snapshots(n.vault))['snap']
    targets = {}
    for peer in ('raw', 'syncoid'):
        targets[peer] = 'vault/bench-%s' % peer
        # A fresh copy of the base, made on the vault.
        shell_pipe(transfer.send_argv('%s@%s' % (n.vault, base)),
                   transfer.recv_argv(targets[peer]), host='vault')
    # Second half of the disk: 1 MiB chunks at random MiB offsets.
    written.write(device, offsets(rng, increment_mib, MiB, SMALL_DISK // 2,
                                  SMALL_DISK), MiB)
    sh('zpool', 'sync', 'compute')
    start = time.monotonic()
    ours = engine.sync(volume_id)
    wall = time.monotonic() - start
    send = transfer.send_argv(ours.snapshot, base='%s@%s' % (n.local, base))
    recv = over_ssh(transfer.recv_argv(targets['raw']))
    on_vault('zpool', 'sync', 'vault')
    raw = bench.timed(shell_pipe, send, recv)
    on_vault('zpool', 'sync', 'vault')
    start = time.monotonic()
    command = syncoid(n.local, targets['syncoid'])
    peer = time.monotonic() - start
    snap = ours.snapshot.split('@')[1]
    for target in targets.values():
        guid = labkit.vault().zfs.get('%s@%s' % (target, snap),
                                      ('guid',))['guid']
        if guid != ours.guid:
            raise DataLost('%s@%s has GUID %s, not %s'
                           % (target, snap, guid, ours.guid))
        disks.destroy(target)
    size = mib(ours.bytes)
    runs = (('ours: engine.sync, whole call', wall),
            ('ours: its transfer.pipe', ours.seconds),
            ('raw: zfs send | ssh vault zfs recv', raw),
            ('syncoid, pushing over ssh', peer))
    table('sync throughput, compute-1 -> vault, the same increment (%d MiB '
          'written in 1 MiB chunks) into fresh copies of the base; stream '
          '%d bytes (send -nvP said %d)'
          % (increment_mib, ours.bytes,
             transfer.estimate(engine.compute_zfs, ours.snapshot,
                               '%s@%s' % (n.local, base))),
          ('run', 'MiB', 'seconds', 'MiB/s', 'x raw speed'),
          [(name, size, seconds, size / seconds, ratio(raw, seconds))
           for name, seconds in runs])
    print('raw ran: %s | %s' % (shlex.join(send), shlex.join(recv)))
    print('syncoid ran: %s' % ' / '.join(c.replace('DEBUG:', '').strip()
                                         for c in command))
    return runs


def bench_sync(engine, disks, master, args, rng):
    """4 and 3 on one disk, cut over; every write checked at the end."""
    volume_id, device, _ = seeded(engine, disks, master)
    engine.cutover(volume_id)
    written = Written()
    if 'throughput' in args.parts:
        bench_throughput(engine, disks, volume_id, device, written, rng,
                         args.increment_mib)
    if 'bytes' in args.parts:
        bench_bytes(engine, volume_id, device, written, rng, args.dirty_mib)
    closed()
    engine.detach(volume_id)
    bad = written.verify_vault(vault_zvol(engine.names(volume_id).vault))
    if bad:
        raise DataLost('sync benchmarks: %d writes lost, e.g. at %s'
                       % (len(bad), bad[:5]))
    print('all %d writes of the sync benchmarks are in the vault'
          % len(written.digests))
    disks.drop(volume_id)


def slot_grants():
    """The vault's transfer slot log: one (busy, who) per grant so far."""
    log = labkit.vault_lab().run(
        'cat', labkit.VAULT_STATE + '/slots/slots.log', check=False)
    return [(int(f[2]), ' '.join(f[3:])) for f in
            (line.split() for line in log.splitlines()) if f[1] == 'grant']


def retried(fn, failures, tries=3):
    """``fn(volume_id)``, tried again when it fails; each failure recorded.

    Many requests at once meet limits that one never does: the vault's
    sshd resets connections beyond its ``MaxStartups`` (by default some
    once 10 are unauthenticated at once); the endpoint client tries what
    ssh could not connect again (vault_client.reconnecting), and what
    still fails is tried again here and counted. Every step may be retried
    (attach undoes what it made, a seed resumes, a discard finishes).
    :param failures: list the failures are appended to.
    """
    def call(volume_id):
        for attempt in range(1, tries + 1):
            try:
                return fn(volume_id)
            except DataLost:
                raise
            except Exception as e:
                failures.append(e)
                # Was it the OOM killer? (It leaves no word on stderr.)
                oom = labkit.run('sh', '-c', 'dmesg | grep -iE "out of '
                                 'memory|killed process" | tail -2',
                                 check=False).strip()
                print('%s of %s failed (try %d of %d): %s%s'
                      % (fn.__name__, volume_id, attempt, tries,
                         ' '.join(str(e).split()),
                         '; kernel: ' + oom if oom else ''), flush=True)
                if attempt == tries:
                    raise
    call.__name__ = fn.__name__
    return call


def bench_many(disks, master, count):
    """5. ``count`` disks attached at once, then seeded at once.

    The vault's ``sync_workers`` is set to :data:`MANY_WORKERS` for the
    run (the vault's attribute is what bounds its transfers); the vault's
    ``zfs send``/``recv`` processes are sampled while the seeds run. Every
    disk goes back at the end (lease broken, replica discarded).
    """
    vault = labkit.vault()
    lab = labkit.vault_lab()
    # Seeds queue on the vault's slots; their stall clocks start at the
    # vault's grant (protocol.SLOT_GRANTED), so the defaults hold.
    engine = labkit.make_engine()
    expected = lab.digest(vault_zvol(master.split('@')[0]), 0, MiB)
    volume_ids = [disks.new(master) for _ in range(count)]
    failed = {'attach': [], 'seed': [], 'return': []}

    def usable(volume_id):
        device = engine.attach(volume_id)
        if labkit.digest(labkit.read_at(device, 0, MiB)) != expected:
            raise DataLost('%s does not read as the disk' % device)

    vault.attributes.set_vault(sync_workers=MANY_WORKERS)
    grants = len(slot_grants())
    try:
        start = time.monotonic()
        attached = at_once(retried(usable, failed['attach']), volume_ids,
                           start)
        lab.start_sampling()
        try:
            seeded_at = at_once(retried(engine.seed, failed['seed']),
                                volume_ids, start)
        finally:
            most = lab.stop_sampling()
        new_grants = slot_grants()[grants:]
    finally:
        vault.attributes.unset_vault('sync_workers')
        closed()
        at_once(retried(disks.drop_unwritten, failed['return']), volume_ids)
    table('%d disks attached at once on compute-1, then seeded at once, the '
          "vault's sync_workers = %d; each a clone of a %d GiB disk with %d "
          'MiB of data; seconds from the first attach unless said'
          % (count, MANY_WORKERS, SMALL_DISK // GiB, SMALL_DATA // MiB),
          ('', 'value'),
          [('most transfers the vault ran at once (zfs send/recv, '
            'sampled)', str(most)),
           ('most slots busy at a grant (vault slots.log)',
            str(max([busy for busy, _ in new_grants] or [0]))),
           ('seed streams granted a slot', str(len(new_grants))),
           ('every device usable (attach, first MiB read)',
            max(attached.values())),
           ('one device usable, median', statistics.median(
               attached.values())),
           ('seeds started (all at once)', max(attached.values())),
           ('first seed landed', min(seeded_at.values())),
           ('every seed landed', max(seeded_at.values())),
           ('failed and tried again: attach / seed / return',
            ' / '.join(str(len(f)) for f in failed.values()))])


def sizes_arg(text):
    """``1,8`` -> [1, 8] (GiB)."""
    try:
        values = [int(v) for v in text.split(',') if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError('sizes are whole GiB, e.g. 1,8')
    return values


def parts_arg(text):
    values = [v for v in text.split(',') if v]
    if not values or set(values) - set(PARTS):
        raise argparse.ArgumentTypeError('parts among %s' % ','.join(PARTS))
    return values


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--sizes', type=sizes_arg, default=[1, 8],
                        help='disk sizes (GiB) of benchmark 1 (default 1,8)')
    parser.add_argument('--pauses', type=int, default=20,
                        help='cut-over rounds (default 20)')
    parser.add_argument('--increment-mib', type=int, default=128,
                        help='increment of the throughput benchmark '
                             '(default 128)')
    parser.add_argument('--dirty-mib', type=int, default=32,
                        help='D of the sync bytes benchmark (default 32)')
    parser.add_argument('--disks', type=int, default=20,
                        help='disks attached at once (default 20)')
    parser.add_argument('--parts', type=parts_arg, default=list(PARTS),
                        help='subset of %s' % ','.join(PARTS))
    parser.add_argument('--seed', type=int, default=3,
                        help='random offsets seed (default 3)')
    parser.add_argument('--quick', action='store_true',
                        help='1 GiB only, 3 cut-over rounds, 6 disks')
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.pauses, args.disks = [1], 3, 6
    if min(args.pauses, args.dirty_mib, args.increment_mib, args.disks) < 1:
        parser.error('--pauses, --dirty-mib, --increment-mib and --disks '
                     'must be at least 1')
    if 2 * args.dirty_mib * MiB > SMALL_DISK // 2 or \
            args.increment_mib * MiB > SMALL_DISK // 2:
        parser.error('--dirty-mib at most 256, --increment-mib at most 512')
    return args


def section(fn, *args):
    print('(%s took %.0f s)' % (fn.__name__, bench.timed(fn, *args)),
          flush=True)


def main(argv=None):
    args = parse_args(argv)
    if not labkit.REMOTE_VAULT:
        sys.exit('bench_replica runs on compute-1 of a lab of hosts: '
                 'tools/zfs-lab bench --hosts vault,compute-1 replica')
    start = time.monotonic()
    engine = labkit.make_engine()
    disks = Disks(engine)
    before = labkit.leftovers()
    print('replica benchmarks on %s, the vault on its own guest (%s): ZFS '
          '%s, kernel %s, %d CPUs here; %s'
          % (labkit.HOST, labkit.VAULT_ADDR,
             sh('cat', '/sys/module/zfs/version').strip(),
             os.uname().release, os.cpu_count(), ' '.join(sys.argv[1:])),
          flush=True)
    if 'device' in args.parts:
        section(bench_device, engine, disks, args.sizes)
    if set(args.parts) - {'device'}:
        master = small_master(disks)
        if 'pause' in args.parts:
            section(bench_pause, engine, disks, master, args.pauses)
        if {'bytes', 'throughput'} & set(args.parts):
            section(bench_sync, engine, disks, master, args,
                    random.Random(args.seed))
        if 'many' in args.parts:
            section(bench_many, disks, master, args.disks)
        disks.destroy(master.split('@')[0])
    after = labkit.leftovers()
    if after != before:
        raise AssertionError('left behind: before %s, after %s'
                             % (before, after))
    print('\nnothing left behind on either host; wall time %.0f s'
          % (time.monotonic() - start))
    return 0


if __name__ == '__main__':
    sys.exit(main())
