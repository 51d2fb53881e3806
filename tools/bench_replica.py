"""Replica benchmarks (issue 3), side by side in one lab run.

Numbers are printed, not asserted; but every write a benchmark makes is
checked in the vault afterwards, and a lost write fails the run.

1. Time to a usable device for a disk full of random data: lazy
   (``ReplicaEngine.attach``, then the first and last MiB read) against
   copy-first (a full ``zfs send | zfs recv`` of a snapshot into the compute
   pool, then the same reads).
2. Cut-over I/O pause under a writer: the two table swaps
   ``ReplicaEngine.cutover`` reports and the worst write latency a
   :class:`~tools.labkit.VerifyingWriter` saw across it (what a VM feels:
   its writes wait in the suspended device), median and worst of N rounds.
3. Sync bytes against dirty bytes: D MiB written at random 4 KiB-aligned
   offsets (and D MiB written twice over the same blocks), the replica's
   ``written`` before the sync and the stream ``ReplicaEngine.sync`` sent.
4. Sync throughput on the same snapshots: ours against the raw
   ``zfs send | zfs recv`` pipe in bash and syncoid, each into a fresh copy
   of the same base, so that all move the same increment.

Run: ``tools/zfs-lab bench replica [--quick] [--sizes 1,8] [--pauses 20]``.
Under TCG the default run takes about half an hour, most of it the 8 GiB
disk's fill and copy-first copy (``--sizes 1,4`` saves about 8 minutes).
"""

import argparse
import hashlib
import os
import random
import shlex
import statistics
import sys
import time
import uuid

from cinder_zfs_vault.compute_host import replica
from cinder_zfs_vault import sync_points
from cinder_zfs_vault import transfer
from tools import bench
from tools import labkit

MiB = 1024 ** 2
GiB = 1024 ** 3
BLOCK = 4096
#: Size of the disk of benchmarks 2 to 4, and of its data.
SMALL_DISK = GiB
SMALL_DATA = 16 * MiB
#: Writes the writer makes before a cut-over, and after it.
WARM_WRITES = 100
PARTS = ('device', 'pause', 'throughput', 'bytes')


class DataLost(AssertionError):
    """The vault does not hold what the benchmark wrote."""


def sh(*argv):
    return labkit.run(*argv)


def zvol(dataset):
    return labkit.wait_for('/dev/zvol/' + dataset)


def shell_pipe(send, recv):
    """``send | recv`` run by bash: a kernel pipe, nothing in between."""
    sh('bash', '-c', 'set -o pipefail; %s | %s'
       % (shlex.join(send), shlex.join(recv)))


def fio_fill(device, size):
    """Write ``size`` bytes of incompressible data to ``device``.

    fio's buffers are random; O_DIRECT 1 MiB writes, 8 in flight: about
    twice the speed of buffered writes into a zvol under TCG.
    """
    sh('fio', '--name=fill', '--filename=' + device, '--rw=write',
       '--bs=1M', '--direct=1', '--ioengine=libaio', '--iodepth=8',
       '--size=%d' % size, '--output=/dev/null')


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


class Disks(object):
    """Vault disks for the benchmarks: clones of filled masters.

    Filling a zvol is the slow part under TCG, so each master is filled once
    and every disk is a clone of its snapshot. A full ``zfs send`` of a
    clone carries all of its data, so seeds and copies still move every
    byte.
    """

    def __init__(self, engine):
        self.engine = engine
        self.zfs = labkit.vault().zfs

    def master(self, name, size, fill):
        """Create ``vault/bench-<name>``, fill it, snapshot it.

        :param fill: callable(device path).
        :returns: (snapshot name, seconds the fill took).
        """
        dataset = 'vault/bench-' + name
        self.zfs.create_volume(dataset, size, sparse=True)
        took = bench.timed(fill, zvol(dataset))
        self.zfs.snapshot(dataset + '@filled')
        return dataset + '@filled', took

    def new(self, master):
        """A new volume id whose vault zvol is a clone of ``master``."""
        volume_id = str(uuid.uuid4())
        self.zfs.clone(master, self.engine.names(volume_id).vault)
        return volume_id

    def destroy(self, dataset, zfs=None):
        """Destroy ``dataset`` and its snapshots, holds released first."""
        zfs = zfs or self.zfs
        if not zfs.exists(dataset):
            return
        for snap in zfs.snapshots(dataset):
            zfs.release(snap['name'], replica.HOLD_TAG)
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
        iSCSI session and COW zvol down instead.
        """
        labkit.vault().break_lease(volume_id)
        self.engine.discard_fenced(volume_id)
        self.drop(volume_id)


def read_ends(device, size):
    """The first and the last MiB of ``device`` (``size`` bytes)."""
    return labkit.read_at(device, 0, MiB) + labkit.read_at(device, size - MiB,
                                                           MiB)


def check_ends(got, expected, what):
    if got != expected:
        raise DataLost('%s: the device does not read as the disk' % what)


def lazy_device(engine, volume_id, size, expected):
    """Attach lazily and read both ends through the dm device."""
    check_ends(read_ends(engine.attach(volume_id), size), expected, 'lazy')


def copy_first_device(engine, volume_id, size, expected):
    """Copy the whole disk into the compute pool, then read both ends."""
    n = engine.names(volume_id)
    snap = n.vault + '@copy-first'
    labkit.vault().zfs.snapshot(snap)
    shell_pipe(transfer.send_argv(snap), transfer.recv_argv(n.local))
    check_ends(read_ends(zvol(n.local), size), expected, 'copy-first')


def bench_device(engine, disks, sizes):
    """1. Time to a usable device, lazy against copy-first."""
    rows = []
    for size in sizes:
        master, fill = disks.master('%dg' % size, size * GiB,
                                    lambda dev, b=size * GiB: fio_fill(dev, b))
        print('filled a %d GiB disk with random data in %.1f s (%.1f MiB/s)'
              % (size, fill, size * 1024 / fill))
        expected = read_ends(zvol(master.split('@')[0]), size * GiB)
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
    table('time to a usable device (start -> first and last MiB read), '
          'seconds', ('size', 'method', 'seconds', 'x lazy'), rows)
    return rows


def small_master(disks):
    """The 1 GiB disk with 16 MiB of data that benchmarks 2 to 4 clone."""
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
    vault = zvol(engine.names(volume_id).vault)
    bad = writer.verify(vault)
    if bad:
        raise DataLost('cut-over round: %d blocks lost in %s, e.g. %s'
                       % (len(bad), vault, bad[:5]))
    disks.drop(volume_id)
    return dict(phases, pauses=pauses, latency=writer.max_latency(),
                writes=writer.writes)


def bench_pause(engine, disks, master, rounds):
    """2. Cut-over I/O pause under a writer, median and worst."""
    results = []
    for i in range(rounds):
        r = pause_round(engine, disks, master)
        results.append(r)
        print('round %2d: attach %.1f s, seed %.1f s, cutover %.1f s '
              '(pauses %s s), detach %.1f s; %d writes, worst %.3f s, '
              'all in the vault'
              % (i + 1, r['attach'], r['seed'], r['cutover'],
                 ' + '.join('%.3f' % p for p in r['pauses']), r['detach'],
                 r['writes'], r['latency']))
    series = (('snapshot -> merge swap', [r['pauses'][0] for r in results]),
              ('merge -> linear swap', [r['pauses'][1] for r in results]),
              ('cutover() call', [r['cutover'] for r in results]),
              ('writer worst write latency', [r['latency'] for r in results]),
              # What the VM feels against what the engine reports.
              ('latency / (swap 1 + swap 2)',
               [r['latency'] / sum(r['pauses']) for r in results]))
    table('cut-over I/O pause, %d rounds, a writer running through it '
          '(O_DIRECT 4 KiB writes, at most 200/s, not held: writes wait in '
          'the suspended device); seconds, last row a ratio; every write '
          'verified in the vault' % rounds, ('', 'median', 'worst'),
          [(name, statistics.median(v), max(v)) for name, v in series])
    return results


class Written(object):
    """What a benchmark wrote: offset -> digest of the data last written."""

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
                    self.digests[offset] = (size,
                                            hashlib.sha1(chunk).digest())
            os.fsync(fd)
        finally:
            os.close(fd)

    def verify(self, path):
        """Offsets where ``path`` differs from the last write: [] is good."""
        with open(path, 'rb', buffering=0) as f:
            return [offset for offset, (size, digest)
                    in sorted(self.digests.items())
                    if hashlib.sha1(os.pread(f.fileno(), size,
                                             offset)).digest() != digest]


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
    """syncoid, local pool to pool, sending exactly what we send.

    No sync snapshot of its own (the increment ends at the newest
    snapshot), ``-L -c`` as ours, ``recv -u`` and no rollback of the target
    (``recv -s`` is its default); quiet, so no pv in the pipe (mbuffer
    stays, as syncoid runs it).
    :returns: syncoid's own command line for the transfer.
    """
    out = sh('syncoid', '--debug', '--no-sync-snap',
             '--no-privilege-elevation', '--quiet', '--no-rollback',
             '--sendoptions=L c', '--recvoptions=u', source, target)
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
        transfer.pipe(transfer.send_argv('%s@%s' % (n.vault, base)),
                      transfer.recv_argv(targets[peer]))
    # Second half of the disk: 1 MiB chunks at random MiB offsets.
    written.write(device, offsets(rng, increment_mib, MiB, SMALL_DISK // 2,
                                  SMALL_DISK), MiB)
    sh('zpool', 'sync', 'compute')
    start = time.monotonic()
    ours = engine.sync(volume_id)
    wall = time.monotonic() - start
    send = transfer.send_argv(ours.snapshot, base='%s@%s' % (n.local, base))
    sh('zpool', 'sync', 'vault')
    raw = bench.timed(shell_pipe, send, transfer.recv_argv(targets['raw']))
    sh('zpool', 'sync', 'vault')
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
            ('raw: zfs send | zfs recv in bash', raw),
            ('syncoid', peer))
    table('sync throughput, the same increment (%d MiB written in 1 MiB '
          'chunks) into fresh copies of the base; stream %d bytes '
          '(send -nvP said %d)'
          % (increment_mib, ours.bytes,
             transfer.estimate(engine.compute_zfs, ours.snapshot,
                               '%s@%s' % (n.local, base))),
          ('run', 'MiB', 'seconds', 'MiB/s', 'x raw speed'),
          [(name, size, seconds, size / seconds, ratio(raw, seconds))
           for name, seconds in runs])
    print('raw ran: %s | %s' % (shlex.join(send),
                                shlex.join(transfer.recv_argv(
                                    targets['raw']))))
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
    bad = written.verify(zvol(engine.names(volume_id).vault))
    if bad:
        raise DataLost('sync benchmarks: %d writes lost, e.g. at %s'
                       % (len(bad), bad[:5]))
    print('all %d writes of the sync benchmarks are in the vault'
          % len(written.digests))
    disks.drop(volume_id)


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
    parser.add_argument('--parts', type=parts_arg, default=list(PARTS),
                        help='subset of %s' % ','.join(PARTS))
    parser.add_argument('--seed', type=int, default=3,
                        help='random offsets seed (default 3)')
    parser.add_argument('--quick', action='store_true',
                        help='1 GiB only, 3 cut-over rounds')
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.pauses = [1], 3
    if args.pauses < 1 or args.dirty_mib < 1 or args.increment_mib < 1:
        parser.error('--pauses, --dirty-mib and --increment-mib must be '
                     'at least 1')
    if 2 * args.dirty_mib * MiB > SMALL_DISK // 2 or \
            args.increment_mib * MiB > SMALL_DISK // 2:
        parser.error('--dirty-mib at most 256, --increment-mib at most 512')
    return args


def section(fn, *args):
    print('(%s took %.0f s)' % (fn.__name__, bench.timed(fn, *args)))


def main(argv=None):
    args = parse_args(argv)
    start = time.monotonic()
    engine = labkit.make_engine()
    disks = Disks(engine)
    print('replica benchmarks: ZFS %s, kernel %s, %d CPUs; %s'
          % (sh('cat', '/sys/module/zfs/version').strip(),
             os.uname().release, os.cpu_count(), ' '.join(sys.argv[1:])))
    if 'device' in args.parts:
        section(bench_device, engine, disks, args.sizes)
    if set(args.parts) - {'device'}:
        master = small_master(disks)
        if 'pause' in args.parts:
            section(bench_pause, engine, disks, master, args.pauses)
        if {'bytes', 'throughput'} & set(args.parts):
            section(bench_sync, engine, disks, master, args,
                    random.Random(args.seed))
        disks.destroy(master.split('@')[0])
    print('\nwall time %.0f s' % (time.monotonic() - start))
    return 0


if __name__ == '__main__':
    sys.exit(main())
