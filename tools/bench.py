"""Benchmarks, side by side in one lab run; numbers printed, not asserted.

1. ``create_cloned_volume`` of a 1 GiB and a 4 GiB volume full of data: ours
   (zfs snapshot + clone) against Cinder's own LVM driver, thick (a full dd
   copy) and thin (a thin snapshot), on loop-backed volume groups as
   devstack makes them.
2. ``get_volume_stats(refresh=True)`` with N volumes in the pool, against an
   empty pool and against LVM thin with the same N volumes.

Run: ``tools/zfs-lab bench [--sizes 1 4] [--stats-volumes 500]``.
"""

import argparse
import os
import statistics
import sys
import time
import uuid

from cinder.volume import configuration
from cinder.volume import driver as cinder_driver

from tools import labkit

CONF = labkit.CONF
CHUNK = 64 * 1024 * 1024


def fill(device, size_gib):
    """Write ``size_gib`` GiB of incompressible data to ``device``."""
    buf = os.urandom(CHUNK)
    fd = os.open(device, os.O_WRONLY)
    try:
        for off in range(0, size_gib * 1024 ** 3, CHUNK):
            os.pwrite(fd, buf, off)
        os.fsync(fd)
    finally:
        os.close(fd)


def timed(fn, *args):
    start = time.monotonic()
    fn(*args)
    return time.monotonic() - start


def loop_vg(name, size_gib):
    """A volume group on a sparse loop file on the compute pool.

    As devstack backs cinder-volumes with a loop file.
    """
    labkit.run('modprobe', 'loop')
    if not os.path.isdir('/lvm'):
        labkit.run('zfs', 'create', '-o', 'mountpoint=/lvm', 'compute/lvm')
    path = '/lvm/%s.img' % name
    labkit.run('truncate', '-s', '%dG' % size_gib, path)
    dev = labkit.run('losetup', '-f', '--show', path).strip()
    labkit.run('pvcreate', '-q', dev)
    labkit.run('vgcreate', '-q', name, dev)
    return dev


def make_lvm(vg, lvm_type):
    # After labkit.setup(): the LVM module's annotations need cinder.objects
    # registered.
    from cinder.volume.drivers import lvm as lvm_driver
    backend = 'lvm-%s' % lvm_type
    conf = configuration.Configuration(
        cinder_driver.volume_opts + lvm_driver.volume_opts,
        config_group=backend)
    for key, value in {'volume_group': vg, 'lvm_type': lvm_type,
                       'target_helper': 'lioadm',
                       'target_ip_address': labkit.PORTAL_IP,
                       'volume_clear': 'none',
                       'volume_dd_blocksize': '4M'}.items():
        CONF.set_override(key, value, group=backend)
    drv = lvm_driver.LVMVolumeDriver(configuration=conf)
    drv.do_setup(labkit.setup())
    drv.check_for_setup_error()
    return drv


def bench_clones(sizes, zfs, lvms):
    print('\n== create_cloned_volume of a volume full of data')
    print('%-8s %-12s %10s %12s' % ('size', 'driver', 'seconds',
                                    'x ours'))
    results = {}
    for size in sizes:
        row = {}
        for name, drv in [('zfs-vault', zfs)] + lvms:
            src = labkit.new_volume(size=size)
            drv.create_volume(src)
            fill(labkit.wait_for(drv.local_path(src)), size)
            clone = labkit.new_volume(size=size)
            row[name] = timed(drv.create_cloned_volume, clone, src)
            drv.delete_volume(clone)
            drv.delete_volume(src)
        for name, seconds in row.items():
            print('%-8s %-12s %10.3f %12.1f' % ('%d GiB' % size, name,
                                                seconds,
                                                seconds / row['zfs-vault']))
        results[size] = row
    return results


def median_stats(drv, runs=5):
    times = []
    for _ in range(runs):
        times.append(timed(drv.get_volume_stats, True))
    return statistics.median(times)


def bench_stats(count, lvm_thin, lvm_count):
    print('\n== get_volume_stats(refresh=True), median of 5')
    root = 'vault/stats%d' % count
    labkit.run('zfs', 'create', root)
    try:
        drv = labkit.make_driver('stats', zfs_vault_dataset=root)
        empty = median_stats(drv)
        for _ in range(count):
            labkit.run('zfs', 'create', '-s', '-V', '1G',
                       '%s/volume-%s' % (root, uuid.uuid4()))
        full = median_stats(drv)
        pool, = drv.get_volume_stats()['pools']
        assert pool['total_volumes'] == count, pool
    finally:
        labkit.run('zfs', 'destroy', '-r', root)
    lvm_full = None
    if lvm_thin is not None:
        vg = lvm_thin.configuration.volume_group
        for _ in range(lvm_count):
            labkit.run('lvcreate', '-q', '-T', '%s/%s-pool' % (vg, vg),
                       '-V', '1G', '-n', 'volume-%s' % uuid.uuid4())
        lvm_full = median_stats(lvm_thin)
    print('zfs-vault, 0 volumes:   %8.3f s' % empty)
    print('zfs-vault, %d volumes: %8.3f s  (x%.2f of empty)'
          % (count, full, full / empty))
    if lvm_full is not None:
        print('LVM thin, %d volumes:  %8.3f s  (x%.2f of zfs-vault at %d)'
              % (lvm_count, lvm_full, lvm_full / full, count))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--sizes', type=int, nargs='+', default=[1, 4])
    parser.add_argument('--stats-volumes', type=int, default=500)
    parser.add_argument('--lvm-stats-volumes', type=int, default=100,
                        help='thin LVs for the LVM stats peer (lvcreate is '
                             'slow under TCG)')
    parser.add_argument('--no-lvm', action='store_true')
    args = parser.parse_args()
    labkit.setup()
    zfs = labkit.make_driver()
    lvms = []
    if not args.no_lvm:
        # Source, clone and the thick clone's temporary snapshot at once.
        need = 3 * max(args.sizes) + sum(args.sizes) + 2
        loop_vg('cinder-thick', need)
        loop_vg('cinder-thin', need)
        lvms = [('lvm-thick', make_lvm('cinder-thick', 'default')),
                ('lvm-thin', make_lvm('cinder-thin', 'thin'))]
    bench_clones(args.sizes, zfs, lvms)
    bench_stats(args.stats_volumes, dict(lvms).get('lvm-thin'),
                args.lvm_stats_volumes)
    return 0


if __name__ == '__main__':
    sys.exit(main())
