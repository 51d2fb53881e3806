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

"""The vault endpoint's server: one process on the vault for every request.

zrepl's ``stdinserver`` model: the forced command of a compute host's SSH
key (``zfs-vault-endpoint``, cmd/endpoint.py) is a small stub that hands
its SSH channel -- standard input, output and error, as file descriptors
(``SCM_RIGHTS``, ``unix(7)``) -- with the host name and initiator its key
names and the request line to this server over a Unix socket only root
can open. The server answers on those descriptors
(:class:`~cinder_zfs_vault.vault_host.endpoint.Endpoint`) and sends the
exit status back to the stub. So a request costs a socket round trip, not
a Python start with oslo's imports, and every request of every host goes
through one authority (one lease lock table, one slot line).

Wire format on the socket, one exchange per connection: the stub sends a
JSON object ``{"host", "initiator", "request"}`` with three descriptors;
the server answers ``{"rc": N}``.
"""

import json
import os
import socket
import threading

from oslo_log import log as logging

from cinder_zfs_vault import lease as leaselib
from cinder_zfs_vault import protocol
from cinder_zfs_vault import validation
from cinder_zfs_vault.vault_host import endpoint as endpointlib

LOG = logging.getLogger(__name__)

#: Largest header a stub may send (host, initiator, request line).
MAX_HEADER = 16 * 1024
#: Seconds a stub has to send it.
HEADER_TIMEOUT = 30


def listen(path):
    """A Unix stream socket at ``path`` that only root may connect to."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(path)
    finally:
        os.umask(old)
    sock.listen(64)
    return sock


class Server(object):
    """Serves stubs' requests on a Unix socket, a thread each.

    :param authority: the vault's
        :class:`~cinder_zfs_vault.vault_host.authority.Authority`.
    :param stall_timeout: seconds a stream may stand still.
    """

    def __init__(self, authority, stall_timeout=120):
        self.authority = authority
        self.stall_timeout = stall_timeout
        self._stopped = threading.Event()

    def serve(self, sock):
        """Accept and answer until :meth:`stop`."""
        sock.settimeout(1.0)
        while not self._stopped.is_set():
            try:
                conn, _addr = sock.accept()
            except socket.timeout:
                continue
            threading.Thread(target=self.handle, args=(conn,),
                             daemon=True).start()

    def stop(self):
        self._stopped.set()

    def handle(self, conn):
        """One stub's request on its SSH channel's descriptors."""
        fds = []
        with conn:
            try:
                # Not the process default: a stub sends its header at once.
                conn.settimeout(HEADER_TIMEOUT)
                data, fds, _flags, _addr = socket.recv_fds(conn, MAX_HEADER,
                                                           3)
                conn.settimeout(None)  # the request takes what it takes
                rc = self._answer(data, fds)
            except Exception:
                LOG.exception('endpoint request failed')
                rc = 1
            finally:
                for fd in fds:
                    os.close(fd)
            try:
                conn.sendall(json.dumps({'rc': rc}).encode())
            except OSError:
                pass  # the stub is gone (its SSH session ended)

    def _answer(self, data, fds):
        if len(fds) != 3:
            raise ValueError('a request needs stdin, stdout and stderr')
        header = json.loads(data.decode())
        stdin = os.fdopen(os.dup(fds[0]), 'rb', buffering=0)
        stdout = os.fdopen(os.dup(fds[1]), 'wb')
        out = os.fdopen(os.dup(fds[1]), 'w')
        err = os.fdopen(os.dup(fds[2]), 'w')
        with stdin, stdout, out, err:
            try:
                host = leaselib.validate_host(header.get('host'))
                initiator = validation.initiator(header.get('initiator'))
            except Exception as e:
                err.write(protocol.error_line(e) + '\n')
                return 1
            endpoint = endpointlib.Endpoint(
                self.authority, host, initiator,
                stall_timeout=self.stall_timeout, stdin=stdin,
                stdout=stdout, stderr=err)
            return endpointlib.serve(endpoint, header.get('request', ''),
                                     out, err)
