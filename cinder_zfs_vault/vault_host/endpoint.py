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

"""The vault endpoint: one request of one authenticated compute host.

A compute host's SSH key may run only the stub ``zfs-vault-endpoint``
(cmd/endpoint.py) as its forced command::

    restrict,command="zfs-vault-endpoint --host compute-1 --initiator
    iqn.2004-10.org.example:compute-1" ssh-ed25519 AAAA... compute-1

so the host name and initiator come from how the host authenticated, never
from what it sends (zrepl's client identities, syncoid's restricted keys).
The stub hands the SSH channel to the endpoint server (server.py), which
answers here: the request (protocol.py) is parsed, checked by the
:class:`~cinder_zfs_vault.vault_host.authority.Authority`, and answered on
the channel. A host can only ever name a volume id: no dataset, no command,
no option reaches ``zfs`` from it.
"""

import contextlib
import json
import shlex
import subprocess
import sys

from oslo_log import log as logging

from cinder_zfs_vault import exception
from cinder_zfs_vault import protocol
from cinder_zfs_vault import transfer
from cinder_zfs_vault import validation
from cinder_zfs_vault.vault_host import streams

LOG = logging.getLogger(__name__)


def parse(command):
    """(verb, {argument: value}) of a request line; values still strings.

    :raises InvalidInput: unknown verb, wrong number of arguments.
    """
    try:
        words = shlex.split(command or '')
    except ValueError as e:
        raise exception.InvalidInput('unreadable request: %s' % e)
    if not words or words[0] not in protocol.REQUESTS:
        raise exception.InvalidInput(
            'unknown request %r; known: %s' % (
                words[0] if words else '',
                ', '.join(sorted(protocol.REQUESTS))))
    names = protocol.REQUESTS[words[0]]
    if len(words) - 1 != len(names):
        raise exception.InvalidInput('%s takes %s' % (
            words[0], ' '.join(n.upper() for n in names) or 'nothing'))
    return words[0], dict(zip(names, words[1:]))


class Endpoint(object):
    """Answers the requests of one host.

    :param authority: the vault's
        :class:`~cinder_zfs_vault.vault_host.authority.Authority`.
    :param host: the asking host, from its key's forced command.
    :param initiator: its iSCSI initiator name, from the same place.
    :param stall_timeout: seconds a stream may stand still, and the window
        over which it must average :data:`protocol.MIN_STREAM_RATE`.
    :param stdin, stdout, stderr: the SSH channel (binary, binary, text).
    """

    def __init__(self, authority, host, initiator, stall_timeout=120,
                 stdin=None, stdout=None, stderr=None):
        self.authority = authority
        self.host = host
        self.initiator = initiator
        self.stall_timeout = stall_timeout
        self.stdin = stdin if stdin is not None else sys.stdin.buffer
        self.stdout = stdout if stdout is not None else sys.stdout.buffer
        self.stderr = stderr if stderr is not None else sys.stderr

    def handle(self, command):
        """Run one request line. :returns: the JSON-able answer or None."""
        verb, args = parse(command)
        if 'generation' in args:
            args['generation'] = validation.generation(args['generation'])
        LOG.info('%s asks: %s %s', self.host, verb,
                 ' '.join(str(v) for v in args.values()))
        return getattr(self, '_' + verb.replace('-', '_'))(**args)

    def _lease(self, volume_id):
        return self.authority.lease(self.host, volume_id)

    def _release(self, volume_id, generation):
        self.authority.release(self.host, volume_id, generation)
        return {}

    def _export(self, volume_id, generation):
        return self.authority.export(self.host, self.initiator, volume_id,
                                     generation)

    def _unexport(self, volume_id, generation):
        self.authority.unexport(self.host, volume_id, generation)
        return {}

    def _info(self, volume_id):
        return self.authority.info(self.host, volume_id)

    def _seed(self, volume_id, generation):
        return self.authority.seed(self.host, volume_id, generation)

    def _confirm(self, volume_id, generation, snap, guid):
        return {'confirmed': self.authority.confirm(
            self.host, volume_id, generation, snap, guid)}

    def _slots(self):
        return {'busy': self.authority.slots.busy(),
                'limit': self.authority.attributes.vault().sync_workers}

    def _disks(self):
        return {vid: dict(disk, lease=disk['lease']._asdict())
                for vid, disk in self.authority.disks(host=self.host).items()}

    def _schedule(self):
        return self.authority.schedule(self.host)

    def _whoami(self):
        """The host and initiator the asking host's key names."""
        return {'host': self.host, 'initiator': self.initiator}

    def _next_sync(self, volume_id, epoch):
        self.authority.set_next_sync(self.host, volume_id, epoch)
        return {}

    # -- streams --------------------------------------------------------------

    @contextlib.contextmanager
    def _slot(self, who, urgent=False):
        """Hold a transfer slot, and tell the client when it has one.

        The wait for a slot may be long (``sync_workers`` streams ahead);
        the client counts stalls only from :data:`protocol.SLOT_GRANTED`.
        ``urgent``: ahead of the line, in the slot kept for it (slots.py).
        """
        with self.authority.slots.slot(who, host=self.host, urgent=urgent):
            self.stderr.write(protocol.SLOT_GRANTED + '\n')
            self.stderr.flush()
            yield

    def _send(self, volume_id, generation, snap):
        return self._stream_out(volume_id, self.authority.send_argv(
            self.host, volume_id, generation, snap=snap))

    def _resume_send(self, volume_id, generation, token):
        return self._stream_out(volume_id, self.authority.send_argv(
            self.host, volume_id, generation, token=token))

    def _stream_out(self, volume_id, argv):
        """``zfs send`` into our standard output, in a slot.

        Relayed (spliced) rather than handed the channel, so that a host
        that stops reading -- powered off, its TCP connection never closed
        -- fails the stream after ``stall_timeout`` and frees the slot,
        instead of holding it for ever.
        """
        self.stdout.flush()
        with self._slot('send %s to %s' % (volume_id, self.host)):
            child = subprocess.Popen(argv, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
            failure = None
            try:
                transfer.relay(child.stdout.fileno(), self.stdout,
                               stall_timeout=self.stall_timeout,
                               min_rate=protocol.MIN_STREAM_RATE)
            except Exception as e:
                failure = e
                child.kill()
            finally:
                child.stdout.close()
            err = child.stderr.read().decode(errors='replace').strip()
            child.stderr.close()
            if child.wait() or failure:
                raise exception.CommandFailed('%s failed: %s %s' % (
                    ' '.join(argv), failure or '', err))
        return None

    def _receive_now(self, volume_id, generation, guid):
        """A sync a caller waits on: ahead of the line (slots.py)."""
        return self._receive(volume_id, generation, guid, urgent=True)

    def _receive(self, volume_id, generation, guid, urgent=False):
        """A sync stream from our standard input, landed fenced.

        Its first record is read and checked before ``zfs receive`` starts:
        a stream carrying properties or holds is refused (streams.py).
        """
        def start(argv):
            return subprocess.Popen(argv, stdin=subprocess.PIPE,
                                    stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE)

        def feed(child):
            child.stdin.write(head)
            child.stdin.flush()
            transfer.relay(self.stdin.fileno(), child.stdin,
                           stall_timeout=self.stall_timeout,
                           min_rate=protocol.MIN_STREAM_RATE)

        with self._slot('receive %s from %s' % (volume_id, self.host),
                        urgent=urgent):
            head = transfer.read_head(self.stdin.fileno(),
                                      streams.BEGIN_SIZE, self.stall_timeout)
            streams.check_begin(head)
            landed = self.authority.receive(self.host, volume_id, generation,
                                            start, feed, expect_guid=guid)
        return {'snap': landed['snap'], 'guid': landed['guid']}


def serve(endpoint, command, out=None, err=None):
    """Answer ``command``; :returns: the exit status (0 or 1)."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        answer = endpoint.handle(command)
    except Exception as e:
        if not isinstance(e, exception.ZFSVaultError):
            LOG.exception('request %r of %s failed', command, endpoint.host)
        err.write(protocol.error_line(e) + '\n')
        err.flush()
        return 1
    if answer is not None:
        out.write(json.dumps(answer, sort_keys=True) + '\n')
        out.flush()
    return 0
