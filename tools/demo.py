"""The main job: a disk's life in the vault, on real ZFS, LIO and iSCSI.

Runs on compute-1 of a lab of hosts (``tools/zfs-lab demo``), the vault on
its own guest: a real bootable Debian root file system image goes into a
volume through the driver's ``copy_image_to_volume`` on the vault; three
clones of it are attached to compute-1 over iSCSI as nova would (the
driver's export and connection on the vault, os-brick's login here),
checked with fsck, mounted and written; one is snapshotted and reverted,
one extended online; one boots lazily from a local replica filled in
behind its writer, reached only through the vault endpoint; then the origin
is deleted while its clones live. Every step prints what happened and how
long it took.
"""

import argparse
import contextlib
import os
import sys
import tempfile
import time

from cinder_zfs_vault.compute_host import flows
from tools import labkit


class Steps(object):
    """Prints each step with its duration; keeps a summary."""

    def __init__(self):
        self.rows = []

    def __call__(self, title, fn, *args, **kwargs):
        sys.stdout.write('  %-58s' % title)
        sys.stdout.flush()
        start = time.monotonic()
        result = fn(*args, **kwargs)
        took = time.monotonic() - start
        sys.stdout.write('%8.2f s\n' % took)
        self.rows.append((title, took))
        self.last = took
        return result


def sh(*argv):
    return labkit.run(*argv).strip()


def check_filesystem(device, mountpoint, marker):
    """fsck (read-only check), mount, read the OS, write a marker file."""
    sh('e2fsck', '-f', '-n', device)
    sh('mount', device, mountpoint)
    try:
        release = open(os.path.join(mountpoint, 'etc/debian_version')).read()
        kernels = [k for k in os.listdir(os.path.join(mountpoint, 'boot'))
                   if k.startswith('vmlinuz-')]
        with open(os.path.join(mountpoint, 'root', marker), 'w') as f:
            f.write('written through iSCSI by the zfs-vault demo\n')
        return release.strip(), kernels
    finally:
        sh('umount', mountpoint)


def files_in(device, mountpoint):
    sh('mount', '-o', 'ro', device, mountpoint)
    try:
        return sorted(os.listdir(os.path.join(mountpoint, 'root')))
    finally:
        sh('umount', mountpoint)


def lazy_boot(step, vault, volume_id, name):
    """Boot a disk lazily and return it to the vault with every write.

    One writer runs on the device from its first second: through the seed,
    the live cut-over and two sync points, until the disk is detached; the
    flows run through the orchestrator and its SQLite logbook, as the agent
    runs them, and reach the vault only through its endpoint. Then the
    vault's copy is checked against every write.
    """
    print('lazy local replica of %s (vm-2) on host %s:'
          % (name, labkit.HOST))
    engine = labkit.make_engine(host=labkit.HOST)
    orch = flows.Orchestrator(engine, 'sqlite:///%s/demo-logbook.sqlite'
                              % labkit.state_path())
    device = step('attach: lease, iSCSI origin, dm snapshot -> device',
                  orch.attach, volume_id)
    print('    time to device: %.2f s' % step.last)
    writer = labkit.VerifyingWriter(device, blocks=16384).start()
    pauses = step('seed + cut-over: zfs send | recv -s; merge; linear',
                  orch.seed, volume_id)
    print('    cut-over I/O pauses (table swaps): %s ms; worst write of the '
          'writer so far: %.0f ms'
          % (', '.join('%.1f' % (p * 1000) for p in pauses),
             writer.max_latency() * 1000))
    synced = 0
    for n in (1, 2):
        time.sleep(3)
        dirty = engine.unsynced_bytes(volume_id)
        result = step('sync point %d: zfs send -I to the vault' % n,
                      orch.sync, volume_id)
        synced += result.bytes
        print('    %s: %d KiB dirty, %d KiB sent'
              % (result.snapshot.split('@')[1], dirty // 1024,
                 result.bytes // 1024))
    writer.stop()
    final = step('detach: final sync, GUID confirmed, replica destroyed',
                 orch.detach, volume_id)
    print('    final sync: %d KiB sent in %.2f s'
          % (final.bytes // 1024, final.seconds))
    bad = vault.verify(vault.zvol(name), writer.last)
    print('    writer: %d writes (%.1f MiB) to %d blocks; vault copy '
          'differs in %d blocks'
          % (writer.writes, writer.writes * 4096 / 2.0 ** 20,
             len(writer.last), len(bad)))
    print('    bytes synced: %.1f MiB by the sync points + %.1f MiB final, '
          'against %.1f MiB written'
          % (synced / 2.0 ** 20, final.bytes / 2.0 ** 20,
             writer.writes * 4096 / 2.0 ** 20))
    assert not bad, bad


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--image', required=True,
                        help='raw ext4 image of a bootable Debian root (a '
                             'path the vault host sees)')
    args = parser.parse_args()
    step = Steps()
    labkit.setup()
    vault = labkit.vault_lab()
    before = labkit.leftovers()
    mnt = tempfile.mkdtemp(prefix='demo-mnt-')
    image_size = os.path.getsize(args.image)
    print('zfs-vault demo: a disk\'s life in the vault (ZFS %s, kernel %s)'
          % (sh('cat', '/sys/module/zfs/version'), os.uname().release))
    print('hosts: vault and %s (%s)' % (
        labkit.HOST, 'separate guests' if labkit.REMOTE_VAULT
        else 'one guest'))
    print('image: %s (%.0f MiB, a bootable Debian 12 root file system)'
          % (args.image, image_size / 2.0 ** 20))

    golden, golden_name = step('create volume "golden" (2 GiB, sparse '
                               'zvol)', vault.create_volume, 2)
    step('copy image to volume (qemu-img onto the zvol)',
         vault.copy_image_to_volume, golden, args.image)
    print('    golden uses %.0f MiB on the vault'
          % (vault.used(golden_name) / 2.0 ** 20))

    clones = []
    for n in range(3):
        clones.append(step('clone golden -> vm-%d (zfs snapshot + clone)'
                           % n, vault.clone, golden, 2))
    print('    each clone uses %s KiB of its own (O(1): blocks shared)'
          % '/'.join(str(vault.used(name) // 1024) for _, name in clones))

    for n, (clone, _name) in enumerate(clones):
        with contextlib.ExitStack() as stack:
            device = step('vm-%d: iSCSI export + os-brick login' % n,
                          stack.enter_context,
                          labkit.attached_to(vault, clone))
            release, kernels = step('vm-%d: fsck, mount, write a file' % n,
                                    check_filesystem, device, mnt,
                                    'vm-%d.txt' % n)
        print('    %s: Debian %s, kernel %s, via %s'
              % ('vm-%d' % n, release, ','.join(kernels), device))

    first = clones[0][0]
    snap = step('vm-0: snapshot', vault.snapshot, first)
    with labkit.attached_to(vault, first) as device:
        step('vm-0: write after the snapshot', check_filesystem, device,
             mnt, 'after-snapshot.txt')
    step('vm-0: revert to snapshot (zfs rollback)', vault.revert, first,
         snap)
    with labkit.attached_to(vault, first) as device:
        names = files_in(device, mnt)
    print('    vm-0 /root after revert: %s' % ', '.join(names))
    assert 'vm-0.txt' in names and 'after-snapshot.txt' not in names

    second = clones[1][0]
    with labkit.attached_to(vault, second) as device:
        step('vm-1: extend 2 -> 3 GiB while attached', vault.extend,
             second, 3)
        sh('iscsiadm', '-m', 'session', '--rescan')
        sh('udevadm', 'settle')
        sh('e2fsck', '-f', '-p', device)
        step('vm-1: resize2fs over iSCSI', sh, 'resize2fs', device)
        size = int(sh('blockdev', '--getsize64', device))
    print('    vm-1 device is now %.1f GiB' % (size / 2.0 ** 30))

    lazy_boot(step, vault, *clones[2])

    step('delete golden while its 3 clones live (zfs promote)',
         vault.delete_volume, golden)
    # vm-2's blocks were overwritten raw by the lazy boot's writer (its
    # writes were checked one by one above): no file system to check.
    for n, (clone, _name) in enumerate(clones[:2]):
        with labkit.attached_to(vault, clone) as device:
            sh('e2fsck', '-f', '-n', device)
            names = files_in(device, mnt)
        print('    vm-%d still clean after the origin went: /root has %s'
              % (n, ', '.join(names)))
    step('vm-0: delete snapshot', vault.delete_snapshot, snap)
    for n, (clone, _name) in enumerate(clones):
        step('delete vm-%d' % n, vault.delete_volume, clone)

    left = labkit.leftovers()
    print('leftovers (zvols, targets, sessions, dm devices) on every host '
          'equal to the start: %s' % (left == before))
    print('\nsummary')
    for title, took in step.rows:
        print('  %-58s%8.2f s' % (title, took))
    return 0 if left == before else 1


if __name__ == '__main__':
    sys.exit(main())
