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

"""The vault as a compute host reaches it: through its endpoint only.

A compute host is never root on the vault (DESIGN.md, "Trust boundary").
Every question and every stream goes to the vault endpoint
(vault_host/endpoint.py) as one request (protocol.py) over OpenSSH with the
host's own key, whose forced command on the vault names the host; host keys
are checked against a known_hosts file, never learnt. Answers are JSON;
refusals come back as the same exception classes the vault raised.

When the vault is this very host (the single-host special case) the same
endpoint runs as a local process, with the same requests and checks.
"""

import hashlib
import json
import os
import re
import shlex
import subprocess
import sys

from oslo_log import log as logging
import tenacity

from cinder_zfs_vault import attributes as attrlib
from cinder_zfs_vault import exception
from cinder_zfs_vault import protocol
from cinder_zfs_vault import transfer
from cinder_zfs_vault import validation

LOG = logging.getLogger(__name__)

#: What ssh(1) says when it gave up before the remote command ran: the
#: request never reached the vault, so trying it again is safe. sshd drops
#: new connections beyond ``MaxStartups`` (10 unauthenticated ones by
#: default, sshd_config(5)), which a host attaching 20 disks at once meets.
NOT_CONNECTED = re.compile(
    r'kex_exchange_identification|ssh_exchange_identification|'
    r'Connection refused|Connection closed by \S+ port \d+|'
    r'Connection timed out during banner exchange')
#: Tries of a request whose connection failed, and the first wait
#: (seconds; random exponential backoff, at most 8 s between tries).
CONNECT_ATTEMPTS = 6
CONNECT_WAIT = 0.5


def not_connected(error):
    """True for a failure of ssh to connect (see :data:`NOT_CONNECTED`)."""
    return isinstance(error, (protocol.EndpointError,
                              exception.CommandFailed)) and \
        bool(NOT_CONNECTED.search(str(error)))


def reconnecting(fn, *args, **kwargs):
    """``fn(*args, **kwargs)``, tried again while ssh could not connect.

    Jittered exponential backoff (tenacity), so that requests turned away
    together do not come back together.
    """
    return tenacity.Retrying(
        retry=tenacity.retry_if_exception(not_connected),
        wait=tenacity.wait_random_exponential(multiplier=CONNECT_WAIT, max=8),
        stop=tenacity.stop_after_attempt(CONNECT_ATTEMPTS),
        before_sleep=lambda state: LOG.warning(
            'vault endpoint: ssh could not connect (try %d of %d): %s',
            state.attempt_number, CONNECT_ATTEMPTS,
            state.outcome.exception()),
        reraise=True)(fn, *args, **kwargs)


def pipe(send, recv, **kwargs):
    """A stream to or from the vault, started again if ssh did not connect.

    :func:`cinder_zfs_vault.transfer.pipe`; a stream whose ssh never
    connected moved no byte, so it starts over cleanly.
    """
    return reconnecting(transfer.pipe, send, recv, **kwargs)


def ssh_transport(host, private_key, known_hosts, port=22, login='root',
                  conn_timeout=30, control_dir=None):
    """argv prefix of a request over OpenSSH, host key checked.

    ``BatchMode`` (no prompt), ``StrictHostKeyChecking=yes`` against
    ``known_hosts`` only (never accept-new), keepalives so that a dead
    vault ends a stream instead of hanging it.

    :param control_dir: share one connection among requests
        (``ControlMaster``, ``ssh_config(5)``): a control request then
        costs a channel, not a key exchange. Streams use their own
        connections (one TCP window each).
    """
    argv = ['ssh', '-p', str(port), '-l', login, '-i', private_key,
            '-o', 'BatchMode=yes', '-o', 'IdentitiesOnly=yes',
            '-o', 'StrictHostKeyChecking=yes',
            '-o', 'UserKnownHostsFile=' + known_hosts,
            '-o', 'GlobalKnownHostsFile=/dev/null',
            '-o', 'ConnectTimeout=%d' % conn_timeout,
            '-o', 'ServerAliveInterval=15', '-o', 'ServerAliveCountMax=4']
    if control_dir:
        os.makedirs(control_dir, mode=0o700, exist_ok=True)
        # %C names user, host and port, not the key: the key's own mark
        # keeps a connection made with one host's key (whose forced
        # command names that host) from carrying another's requests.
        key = hashlib.sha256(os.path.abspath(private_key).encode())
        path = os.path.join(control_dir, key.hexdigest()[:12] + '-%C')
        argv += ['-o', 'ControlMaster=auto', '-o', 'ControlPath=' + path,
                 '-o', 'ControlPersist=300']
    return argv + ['-T', host]


def local_transport(host, initiator, socket_path=None):
    """argv prefix of a request to the endpoint server on this very host.

    The stub an SSH key would force, run directly.
    """
    argv = [sys.executable, '-m', 'cinder_zfs_vault.cmd.endpoint',
            '--host', host, '--initiator', initiator]
    if socket_path:
        argv += ['--socket', socket_path]
    return argv + ['--']


class VaultClient(object):
    """Requests to the vault endpoint.

    :param transport: argv prefix (:func:`ssh_transport` or
        :func:`local_transport`); the request line is its last argument.
    :param stream_transport: the same for streams (seeds, syncs), if it
        differs (no shared connection).
    :param timeout: seconds a control request may take.
    """

    def __init__(self, transport, timeout=120, stream_transport=None):
        self.transport = list(transport)
        self.stream_transport = list(stream_transport or transport)
        self.timeout = timeout

    def argv(self, verb, *args, stream=False):
        """argv of one request (the streams run it themselves)."""
        prefix = self.stream_transport if stream else self.transport
        return prefix + [shlex.join([verb] + [str(a) for a in args])]

    def call(self, verb, *args):
        """Run a control request. :returns: its JSON answer.

        A request ssh could not deliver is tried again (:func:`reconnecting`).
        :raises: the vault's error class (protocol.error_from), or
            EndpointError when the vault cannot be reached.
        """
        return reconnecting(self._call, verb, *args)

    def _call(self, verb, *args):
        argv = self.argv(verb, *args)
        try:
            result = subprocess.run(argv, capture_output=True, text=True,
                                    timeout=self.timeout,
                                    stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise protocol.EndpointError('vault endpoint: %s took over %ss'
                                         % (verb, self.timeout))
        if result.returncode:
            raise protocol.error_from(result.stderr,
                                      'vault endpoint: %s failed' % verb)
        return json.loads(result.stdout) if result.stdout.strip() else {}

    # -- requests (protocol.REQUESTS) -----------------------------------------

    def lease(self, volume_id):
        """Take the lease. :returns: dict (Authority.lease)."""
        return self.call('lease', volume_id)

    def release(self, volume_id, generation):
        self.call('release', volume_id, generation)

    def export(self, volume_id, generation):
        """The origin's os-brick iSCSI properties (Authority.export)."""
        return self.call('export', volume_id, generation)

    def unexport(self, volume_id, generation):
        self.call('unexport', volume_id, generation)

    def info(self, volume_id):
        return self.call('info', volume_id)

    def seed(self, volume_id, generation):
        return self.call('seed', volume_id, generation)

    def confirm(self, volume_id, generation, snap, guid):
        return self.call('confirm', volume_id, generation, snap, guid)

    def slots(self):
        return self.call('slots')

    def disks(self):
        """{volume id: disk} of the disks this host holds (JSON)."""
        return self.call('disks')

    def schedule(self):
        return self.call('schedule')

    def set_next_sync(self, volume_id, epoch):
        self.call('next-sync', volume_id, int(epoch))

    def whoami(self):
        """This host's names as its endpoint key gives them.

        :returns: ``{'host', 'initiator'}``, the forced command's
            ``--host`` and ``--initiator``.
        """
        return self.call('whoami')

    def send_argv(self, volume_id, generation, snap=None, token=None):
        """argv whose standard output is the seed stream."""
        if token:
            return self.argv('resume-send', volume_id, generation, token,
                             stream=True)
        return self.argv('send', volume_id, generation, snap, stream=True)

    def receive_argv(self, volume_id, generation, guid=None, urgent=False):
        """argv whose standard input lands a sync in the vault.

        ``urgent``: a sync a caller waits on (``receive-now``): the vault
        gives it a slot ahead of seeds and periodic syncs.
        """
        return self.argv('receive-now' if urgent else 'receive', volume_id,
                         generation, guid or '-', stream=True)


class VaultAttributes(object):
    """The sync schedule of this host's disks, as the scheduler reads it.

    The interface of :class:`~cinder_zfs_vault.attributes.Attributes` that
    :class:`~.scheduler.SyncScheduler` uses, answered by the endpoint
    (only the disks this host holds).
    """

    def __init__(self, client, vault_root):
        self.client = client
        self.vault_root = validation.dataset(vault_root)

    def dataset(self, volume_id):
        return validation.volume_dataset(self.vault_root, volume_id)

    def read_all(self):
        answer = self.client.schedule()
        vault = attrlib.VaultAttributes(**answer['vault'])
        return vault, {self.dataset(vid): attrlib.VolumeAttributes(**a)
                       for vid, a in answer['volumes'].items()}

    def vault(self):
        return self.read_all()[0]

    def volume(self, dataset):
        volume_id = validation.volume_id_in(dataset.rsplit('/', 1)[-1],
                                            'volume-')
        answer = self.client.info(volume_id)
        return attrlib.VolumeAttributes(**{
            n: answer[n] for n in attrlib.VOLUME_ATTRIBUTES})

    def set_volume(self, dataset, next_sync):
        volume_id = validation.volume_id_in(dataset.rsplit('/', 1)[-1],
                                            'volume-')
        self.client.set_next_sync(volume_id, next_sync)
