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

"""The main job: a VM boots from the vault through Cinder's front door.

Runs on compute-1 of a lab of hosts (``tools/zfs-lab demo``); the vault,
with RabbitMQ and Cinder's own services (cinder-api, cinder-scheduler,
cinder-volume with this driver), is its own guest; ``zfs-vault-agent``
runs here. Through cinder-api only, as an operator and nova would:

1. a bootable Debian 12 root image the operator has on the vault is
   managed into Cinder, and cloned (O(1)) as a VM's disk;
2. the clone is attached to this host as nova attaches it (attachment
   create, update with this host's os-brick connector, complete): the
   connection is ``local``, its ``device_path`` is ready at once;
3. a VM boots from that device with QEMU (as libvirt runs it from the path
   nova puts in the domain XML) while the agent seeds the local replica
   behind it and cuts it over live; the VM's own init writes a marker;
4. a snapshot of the running disk (a sync point taken now); the VM writes
   a second marker and powers off;
5. detach (the agent's final sync, confirmed by GUID on the vault); the
   vault copy holds both markers, the snapshot only the first.

Every step prints what happened and how long it took.
"""

import argparse
import queue
import subprocess
import sys
import threading
import time

from oslo_utils import uuidutils

from tools import lab_cinder
from tools import labkit

#: Seconds for a Cinder volume or snapshot to reach a status (TCG guest).
WAIT = 600
#: Seconds for the VM (QEMU under QEMU, both emulated) to boot or stop.
VM_TIMEOUT = 2400
#: The demo's volume type: its seed throttled (an extra spec) so that it
#: outlasts the VM's boot, as a big disk's would; the VM then reads the
#: vault's blocks through the device while its replica fills in.
DEMO_TYPE = 'zfsvault-demo'
DOWNLOAD_RATE = '1M'
#: The VM's kernel arguments past its root: quiet (each line printed on
#: an emulated UART is slow), no crypto self-tests, no watchdogs.
KERNEL_ARGS = ('quiet cryptomgr.notests mitigations=off tsc=reliable '
               'no_timer_check nowatchdog audit=0 fsck.mode=skip')
KERNEL = '/lab-share/demo-vmlinuz'
INITRD = '/lab-share/demo-initrd.img'


class Steps(object):
    """Prints each step with its duration; keeps a summary."""

    def __init__(self):
        self.rows = []
        self.last = None

    def __call__(self, title, fn, *args, **kwargs):
        sys.stdout.write('  %-68s' % title)
        sys.stdout.flush()
        start = time.monotonic()
        result = fn(*args, **kwargs)
        self.last = time.monotonic() - start
        sys.stdout.write('%8.1f s\n' % self.last)
        self.rows.append((title, self.last))
        return result


class Cinder(object):
    """What the demo asks of cinder-api (openstacksdk), with its waits."""

    def __init__(self):
        self.api = lab_cinder.client().block_storage
        for name, specs in ((lab_cinder.BACKEND, {}), (DEMO_TYPE, {
                'zfs_vault:download_rate': DOWNLOAD_RATE})):
            if not self.api.find_type(name):
                specs['volume_backend_name'] = lab_cinder.BACKEND
                self.api.create_type(name=name, extra_specs=specs)

    def wait(self, resource, status):
        get = (self.api.get_volume if resource.resource_key == 'volume'
               else self.api.get_snapshot)
        return self.api.wait_for_status(
            get(resource), status, failures=['error', 'error_deleting'],
            interval=2, wait=WAIT)

    def manage(self, zvol_name):
        host, = [s.host for s in self.api.services()
                 if s.binary == 'cinder-volume']
        vol = self.api.manage_volume(host=host, name='debian-12',
                                     volume_type=DEMO_TYPE,
                                     ref={'source-name': zvol_name})
        return self.wait(vol, 'available')

    def create_volume(self, **kwargs):
        return self.wait(self.api.create_volume(**kwargs), 'available')

    def snapshot(self, vol):
        """A snapshot of an in-use volume: nova asks with ``force``."""
        snap = self.api.create_snapshot(volume_id=vol.id, is_forced=True,
                                        name='running-' + vol.name)
        return self.wait(snap, 'available')

    def attach(self, vol):
        """nova's attach: reserve, update with the connector, complete.

        :returns: (attachment id, the connection's driver_volume_type,
            its device_path).
        """
        att = self.api.create_attachment(vol.id)
        connector = labkit.connector_properties(host=labkit.HOST)
        att = self.api.update_attachment(att.id, connector=connector)
        self.api.complete_attachment(att.id)
        self.wait(vol, 'in-use')
        info = att.connection_info
        return att.id, info['driver_volume_type'], info.get('device_path')

    def detach(self, vol, attachment_id):
        self.api.delete_attachment(attachment_id, ignore_missing=False)
        self.wait(vol, 'available')

    def delete(self, resource):
        """Delete (if still there) and wait until it is gone."""
        delete = (self.api.delete_volume if resource.resource_key == 'volume'
                  else self.api.delete_snapshot)
        delete(resource, ignore_missing=True)
        self.api.wait_for_delete(resource, interval=2, wait=WAIT)


class VM(object):
    """A QEMU VM on a block device, its serial console on our pipes.

    As libvirt runs it for a volume nova attached: the device as a raw
    virtio disk with the host's page cache bypassed (``cache=none``).
    """

    def __init__(self, device, token):
        self.started = time.monotonic()
        self.lines = queue.Queue()
        self.proc = subprocess.Popen(
            ['qemu-system-x86_64', '-accel', 'tcg', '-m', '512',
             '-smp', '1', '-nodefaults', '-display', 'none',
             '-serial', 'stdio', '-no-reboot',
             '-kernel', KERNEL, '-initrd', INITRD,
             '-append', 'console=ttyS0 root=/dev/vda rw %s init=/usr/local/'
             'sbin/demo-vm-init demo.token=%s' % (KERNEL_ARGS, token),
             '-drive', 'file=%s,format=raw,if=virtio,cache=none' % device],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, start_new_session=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for raw in self.proc.stdout:
            self.lines.put(raw.decode('utf-8', 'replace').rstrip())
        self.lines.put(None)

    def expect(self, text, timeout=VM_TIMEOUT, tick=None):
        """Wait for a console line with ``text``; echo the VM's lines.

        :param tick: called about every 2 seconds while waiting.
        :raises RuntimeError: the VM stopped or ``timeout`` seconds passed.
        """
        deadline = time.monotonic() + timeout
        said = time.monotonic()
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=2)
            except queue.Empty:
                if tick:
                    tick()
                if time.monotonic() - said > 120:
                    said = time.monotonic()
                    print('    [VM +%5.1f s] (running, its console quiet)'
                          % (said - self.started))
                continue
            if line is None:
                raise RuntimeError('the VM stopped (QEMU exit %s) before '
                                   '%r' % (self.proc.wait(), text))
            if line.startswith('demo-vm:'):
                print('    [VM +%5.1f s] %s'
                      % (time.monotonic() - self.started, line))
            if text in line:
                return line
        raise RuntimeError('no %r from the VM in %d s' % (text, timeout))

    def send(self, line):
        self.proc.stdin.write(line.encode() + b'\n')
        self.proc.stdin.flush()

    def wait(self, timeout=VM_TIMEOUT):
        return self.proc.wait(timeout)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(60)


class Replica(object):
    """Prints each change of the agent's state of a disk, once."""

    def __init__(self, volume_id, started):
        self.engine = labkit.make_engine()  # reads states only
        self.volume_id = volume_id
        self.started = started
        self.seen = None

    def __call__(self):
        state = str(self.engine.state(self.volume_id))
        if state != self.seen:
            print('    [agent +%4.1f s] replica: %s'
                  % (time.monotonic() - self.started, state))
            self.seen = state
        return state


def until(check, timeout, what):
    """Poll ``check()`` every 2 s until true. :raises TimeoutError:"""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError('no %s in %d s' % (what, timeout))
        time.sleep(2)


def read_marker(vault, volume_id, name):
    """A file of /root in the volume's ext4, read on the vault.

    With debugfs: it reads the file system as it is on the disk, without
    the kernel mounting a VM's file system on the vault; it does not
    replay the journal, so the VM's init freezes its file system (which
    checkpoints it) after each marker.
    """
    out = vault.run('debugfs', '-R', 'cat /root/' + name,
                    vault.zvol('volume-' + volume_id))
    return out.strip() or None


def boot(step, cinder, disk, made):
    """Attach as nova, boot the VM, snapshot it running, detach.

    The snapshot is added to ``made`` (what the demo deletes at its end).

    :returns: (the boot's token, the word sent after the cut-over, the
        snapshot).
    """
    token = uuidutils.generate_uuid()[:8]
    word = 'after-cutover-' + uuidutils.generate_uuid()[:8]
    attachment, kind, device = step(
        'attach as nova does: attachment create/update/complete',
        cinder.attach, disk)
    print('    connection: %s, device_path %s' % (kind, device))
    assert kind == 'local', kind
    started = time.monotonic()
    replica = Replica(disk.id, started)
    replica()
    vm = VM(device, token)
    try:
        step('VM boots from the vault through the device; init '
             'writes a marker', vm.expect, 'waiting for a line',
             tick=replica)
        step('the agent seeds and cuts over behind the running VM',
             until, lambda: replica() == 'local', VM_TIMEOUT,
             'the cut-over to the local replica')
        snap = step('snapshot of the running disk (the agent\'s sync '
                    'point, now)', cinder.snapshot, disk)
        made.append(snap)
        vm.send(word)
        step('VM writes a second marker on the replica, powers off',
             vm.expect, 'powering off')
        print('    QEMU exit status: %d' % vm.wait())
    finally:
        # A failed run detaches too: the final sync returns what the VM
        # wrote, and no replica, session or dm device stays here.
        vm.kill()
        step('detach as nova does: attachment delete (final sync, GUID '
             'confirmed)', cinder.detach, disk, attachment)
    replica()
    return token, word, snap


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--image', required=True,
                        help='raw ext4 image of a bootable Debian root (a '
                             'path the vault host sees)')
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # the VM's lines as they come
    step = Steps()
    labkit.setup(cinder=False)
    vault = labkit.vault_lab()
    before = labkit.leftovers()
    print('zfs-vault demo: a VM boots from the vault through Cinder\'s API '
          '(ZFS %s, kernel %s)' % (labkit.run('cat', '/sys/module/zfs/'
                                              'version').strip(),
                                   labkit.run('uname', '-r').strip()))
    print('hosts: vault (RabbitMQ, cinder-api, cinder-scheduler, '
          'cinder-volume) and %s (zfs-vault-agent, the VM)' % labkit.HOST)

    step('start RabbitMQ and Cinder\'s services on the vault',
         vault.ensure_cinder)
    agent = step('start zfs-vault-agent here', labkit.start_agent,
                 lab_cinder.agent_transport_url())
    made = []  # Cinder's volumes and snapshots, deleted newest first
    try:
        cinder = Cinder()
        legacy = 'debian-12-root'
        step('operator: the image onto a zvol on the vault (qemu-img)',
             load_image, vault, legacy, args.image)
        golden = step('manage it into Cinder (zfs rename)', cinder.manage,
                      legacy)
        made.append(golden)
        print('    volume type %s: seeds at most %sB/s (extra spec '
              'zfs_vault:download_rate)' % (DEMO_TYPE, DOWNLOAD_RATE))
        disk = step('clone it as the VM\'s disk (zfs snapshot + clone)',
                    cinder.create_volume, source_volid=golden.id,
                    size=golden.size, name='vm-disk')
        made.append(disk)
        print('    the clone uses %d KiB of its own on the vault (O(1))'
              % (vault.used('volume-' + disk.id) // 1024))
        token, word, snap = boot(step, cinder, disk, made)

        booted = read_marker(vault, disk.id, 'boot-marker')
        after = read_marker(vault, disk.id, 'after-cutover-marker')
        print('    vault copy, /root/boot-marker: %s' % booted)
        print('    vault copy, /root/after-cutover-marker: %s' % after)
        assert booted and token in booted, booted
        assert after and word in after and token in after, after
        copy = step('volume from the snapshot', cinder.create_volume,
                    snapshot_id=snap.id, size=disk.size,
                    name='vm-disk-at-snapshot')
        made.append(copy)
        in_snap = (read_marker(vault, copy.id, 'boot-marker'),
                   read_marker(vault, copy.id, 'after-cutover-marker'))
        print('    the snapshot has the boot marker: %s; the second '
              'marker: %s' % (bool(in_snap[0]), bool(in_snap[1])))
        assert in_snap[0] == booted and in_snap[1] is None, in_snap
    finally:
        for what in reversed(made):
            step('delete %s %s' % (what.resource_key, what.name),
                 cinder.delete, what)
        labkit.stop_agent(agent)
    left = labkit.leftovers()
    print('leftovers (zvols, targets, sessions, dm devices) on both hosts '
          'equal to the start: %s' % (left == before))
    print('\nsummary')
    for title, took in step.rows:
        print('  %-68s%8.1f s' % (title, took))
    return 0 if left == before else 1


def load_image(vault, name, image):
    """What an operator has before Cinder: a Debian root on a zvol."""
    size = vault.run('stat', '-c', '%s', image).strip()
    gib = -(-int(size) // 2 ** 30)
    vault.run('zfs', 'create', '-s', '-V', '%dG' % gib, 'vault/' + name)
    vault.run('qemu-img', 'convert', '-n', '-f', 'raw', '-O', 'raw', image,
              vault.zvol(name))


if __name__ == '__main__':
    sys.exit(main())
