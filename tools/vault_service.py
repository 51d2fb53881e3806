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

"""The lab's hands on the vault host, for tests run on a compute host.

In a lab of hosts (``tools/zfs-lab exec --hosts vault,compute-1,...``) the
tests run on compute-1; what they do on the vault (create a volume as
cinder-volume would, write or read a zvol, break a lease as an operator,
install a compute host's restricted endpoint key) goes to this service on
the vault guest, started on first use over the lab's root SSH. It is test
infrastructure: the replica engine itself never uses it, it reaches the
vault only through ``zfs-vault-endpoint``.

``python -m tools.vault_service`` listens on the vault's private address,
port :data:`PORT`, with :mod:`multiprocessing.connection` (HMAC
authenticated with the lab run's key, which only the lab's guests see).
A request is ``(path, args, kwargs)``: ``lab.<method>`` of :class:`VaultLab`
or ``authority.<...>`` of the vault's Authority.
"""

import functools
import os
import sys
import threading
import time

from tools import lab_cinder
from tools import labkit

PORT = 7010


class VaultLab(object):
    """What the tests do on the vault host, as cinder-volume or root."""

    def __init__(self):
        self._volumes = {}
        self._sampler = None

    @functools.cached_property
    def driver(self):
        return labkit.make_driver()

    # -- volumes, as Cinder's driver makes them -------------------------------

    def create_volume(self, size=1, volume_id=None):
        """A new volume; :returns: (id, name)."""
        vol = labkit.new_volume(size, **({'id': volume_id}
                                         if volume_id else {}))
        self.driver.create_volume(vol)
        self._volumes[vol.id] = vol
        return vol.id, vol.name

    def delete_volume(self, volume_id):
        self.driver.delete_volume(self._volume(volume_id))
        self._volumes.pop(volume_id, None)

    def zvol(self, name):
        return labkit.wait_for('/dev/zvol/vault/' + name)

    # -- what Cinder's volume manager asks of the driver -------------------

    def _volume(self, volume_id):
        """The volume's object, as Cinder's database has it.

        This registry is in memory: after a power cut of this host the
        object is made again from its zvol (name and size).
        """
        if volume_id not in self._volumes:
            vol = labkit.new_volume(1, id=volume_id)
            vol.size = int(labkit.run(
                'zfs', 'get', '-Hp', '-o', 'value', 'volsize',
                'vault/' + vol.name)) // (1024 ** 3)
            self._volumes[volume_id] = vol
        return self._volumes[volume_id]

    def copy_image_to_volume(self, volume_id, path):
        """Write a raw image file (on this host) onto the volume."""
        images = labkit.LocalImageService()
        image_id = images.add(path, copy=False)
        self.driver.copy_image_to_volume(labkit.setup(),
                                         self._volume(volume_id), images,
                                         image_id)

    def clone(self, source_id, size):
        """create_cloned_volume; :returns: (id, name) of the clone."""
        vol = labkit.new_volume(size)
        self.driver.create_cloned_volume(vol, self._volume(source_id))
        self._volumes[vol.id] = vol
        return vol.id, vol.name

    def snapshot(self, volume_id):
        """create_snapshot; :returns: the snapshot's id."""
        snap = labkit.new_snapshot(self._volume(volume_id))
        self.driver.create_snapshot(snap)
        self._snapshots = getattr(self, '_snapshots', {})
        self._snapshots[snap.id] = snap
        return snap.id

    def revert(self, volume_id, snapshot_id):
        self.driver.revert_to_snapshot(labkit.setup(),
                                       self._volume(volume_id),
                                       self._snapshots[snapshot_id])

    def delete_snapshot(self, snapshot_id):
        self.driver.delete_snapshot(self._snapshots.pop(snapshot_id))

    def extend(self, volume_id, size):
        vol = self._volume(volume_id)
        self.driver.extend_volume(vol, size)
        vol.size = size

    def initialize(self, volume_id, connector):
        """create_export + initialize_connection: nova's attach, vault side.

        :returns: the connection info's ``data`` (os-brick properties).
        """
        vol = self._volume(volume_id)
        vol.update(self.driver.create_export(labkit.setup(), vol, None))
        return self.driver.initialize_connection(vol, connector)['data']

    def terminate(self, volume_id, connector):
        vol = self._volume(volume_id)
        self.driver.terminate_connection(vol, connector)
        self.driver.remove_export(labkit.setup(), vol)

    def used(self, name):
        """Bytes the zvol uses on the vault (``used``)."""
        return int(labkit.run('zfs', 'get', '-Hp', '-o', 'value', 'used',
                              'vault/' + name))

    # -- data -----------------------------------------------------------------

    def write_at(self, path, offset, data):
        labkit.write_at(path, offset, data)

    def write_pattern(self, path, offset, seed, size):
        """labkit.pattern(seed, size) at ``offset``, made here.

        No copy of the data crosses the lab's network.
        """
        labkit.write_at(path, offset, labkit.pattern(seed, size))

    def write_random(self, path, offset, size):
        """``size`` random bytes at ``offset`` (incompressible)."""
        labkit.write_at(path, offset, os.urandom(size))

    def read_at(self, path, offset, size):
        return labkit.read_at(path, offset, size)

    def digest(self, path, offset, size):
        """SHA-256 of ``size`` bytes at ``offset`` (hex)."""
        return labkit.digest(labkit.read_at(path, offset, size))

    def digests(self, path, extents):
        """SHA-256 (hex) of each ``(offset, size)`` extent of ``path``.

        Many blocks checked in one call, none of their data crossing the
        lab's network (the replica benchmarks' writes).
        """
        with open(path, 'rb', buffering=0) as f:
            return [labkit.digest(os.pread(f.fileno(), size, offset))
                    for offset, size in extents]

    def verify(self, path, last, at_least=False):
        """Blocks of ``path`` unlike a VerifyingWriter's last writes."""
        writer = labkit.VerifyingWriter.__new__(labkit.VerifyingWriter)
        writer.last = last
        return writer.verify(path, at_least)

    def run(self, *argv, check=True):
        return labkit.run(*argv, check=check)

    def zvols(self, root='vault'):
        return labkit.zvols(root)

    def leftovers(self):
        """What a test could leak on the vault: zvols, targets."""
        return {'zvols': labkit.zvols('vault'), 'targets': labkit.targets()}

    def resume_token_of(self, dataset):
        return labkit.resume_token_of(dataset)

    # -- the endpoint ---------------------------------------------------------

    def install_endpoint_key(self, host, initiator, public_key):
        """Let ``host``'s key run the vault endpoint, and nothing else.

        The ``authorized_keys`` line a deployment writes for each compute
        host: a forced command naming the host and its initiator.
        """
        labkit.ensure_endpoint_server()
        tree = os.getcwd()
        line = ('restrict,command="cd %s && PYTHONPATH=%s %s -m '
                'cinder_zfs_vault.cmd.endpoint --host %s --initiator %s" '
                '%s\n' % (tree, tree, sys.executable, host, initiator,
                          public_key.strip()))
        with open('/root/.ssh/authorized_keys', 'a+') as f:
            f.seek(0)
            if line not in f.read():
                f.write(line)

    def start_services(self):
        """What the vault's systemd starts at boot: the endpoint server."""
        labkit.ensure_endpoint_server()

    def ensure_cinder(self):
        """RabbitMQ and Cinder's services (tools/lab_cinder.py)."""
        lab_cinder.ensure()

    def stop_cinder(self):
        lab_cinder.stop()

    def cinder_logs(self, tail=200):
        return lab_cinder.logs(tail)

    def processes(self, pattern):
        """``[(user, command line)]`` of the processes ``pattern`` names."""
        out = labkit.run('ps', '-eo', 'user:32,args', check=False)
        return [tuple(line.split(None, 1)) for line in out.splitlines()[1:]
                if pattern in line and 'ps -eo' not in line]

    def rootwrap_as_cinder(self, *argv):
        """``argv`` through Cinder's root helper, as Cinder's user.

        :returns: (exit status, its output).
        """
        return lab_cinder.run_as_cinder(
            ['sudo', '-n', lab_cinder.ROOTWRAP_BIN, lab_cinder.ROOTWRAP_CONF]
            + list(argv), timeout=120)

    # -- what the vault runs at once ------------------------------------------

    def start_sampling(self, interval=0.2):
        """Count ``zfs send``/``zfs recv`` processes until stop_sampling."""
        stop = threading.Event()
        most = [0]

        def sample():
            while not stop.is_set():
                out = labkit.run('pgrep', '-c', '-f', '^zfs (send|recv) ',
                                 check=False).strip()
                most[0] = max(most[0], int(out or 0))
                time.sleep(interval)

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        self._sampler = (stop, thread, most)

    def stop_sampling(self):
        """:returns: the most transfers seen running at once."""
        stop, thread, most = self._sampler
        stop.set()
        thread.join(10)
        return most[0]


def _resolve(targets, path):
    head, _, rest = path.partition('.')
    obj = targets[head]
    for name in rest.split('.') if rest else ():
        if name.startswith('_'):
            raise AttributeError(name)
        obj = getattr(obj, name)
    return obj


def _serve(conn, targets):
    with conn:
        while True:
            try:
                path, args, kwargs = conn.recv()
            except EOFError:
                return
            try:
                reply = ('ok', _resolve(targets, path)(*args, **kwargs))
            except Exception as e:
                reply = ('error', e)
            try:
                conn.send(reply)
            except Exception as e:  # an answer that does not pickle
                conn.send(('error', RuntimeError(repr(e))))


def main():
    from multiprocessing import connection
    labkit.setup()
    targets = {'lab': VaultLab(), 'authority': labkit.vault()}
    listener = connection.Listener((labkit.VAULT_ADDR, PORT),
                                   authkey=labkit.lab_authkey())
    print('vault service on %s:%d' % (labkit.VAULT_ADDR, PORT), flush=True)
    while True:
        conn = listener.accept()
        threading.Thread(target=_serve, args=(conn, targets),
                         daemon=True).start()


if __name__ == '__main__':
    main()
