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

"""Console script ``zfs-vault-endpoint``: the forced command of a host's key.

On the vault host, each compute host's SSH key runs only this
(``authorized_keys``)::

    restrict,command="zfs-vault-endpoint --host compute-1
    --initiator iqn.2004-10.org.example:compute-1" ssh-ed25519 AAAA...

It hands the SSH channel (its standard input, output and error) with the
host name and initiator named here and the request (``SSH_ORIGINAL_COMMAND``;
for the single-host case and tests it may follow ``--``) to the endpoint
server, ``zfs-vault-endpoint-server`` (vault_host/server.py), over a Unix
socket only root can open, and exits with the status the server returns.
It imports nothing but the standard library, so a request starts fast.
"""

import argparse
import json
import os
import socket
import sys

#: protocol.PROGRAM: the prefix of the error line a client parses.
PROGRAM = 'zfs-vault-endpoint'
SOCKET = '/run/zfs-vault/endpoint.sock'


def _refuse(message):
    # protocol.error_line's format, for the one error the stub itself has.
    sys.stderr.write('%s: EndpointError: %s\n' % (PROGRAM, message))
    sys.stderr.flush()
    return 1


def main(argv=None):
    """Pass one request to the server. :returns: its exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    request = os.environ.get('SSH_ORIGINAL_COMMAND', '')
    if '--' in argv:
        request = ' '.join(argv[argv.index('--') + 1:])
        argv = argv[:argv.index('--')]
    parser = argparse.ArgumentParser(prog=PROGRAM)
    parser.add_argument('--host', required=True)
    parser.add_argument('--initiator', required=True)
    parser.add_argument('--socket', default=SOCKET)
    args = parser.parse_args(argv)
    header = json.dumps({'host': args.host, 'initiator': args.initiator,
                         'request': request}).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(args.socket)
            socket.send_fds(sock, [header], [0, 1, 2])
            sock.shutdown(socket.SHUT_WR)
            reply = b''
            while True:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                reply += chunk
        return int(json.loads(reply.decode())['rc'])
    except (OSError, ValueError, KeyError) as e:
        return _refuse('the vault endpoint server is not answering on %s: '
                       '%s' % (args.socket, e))


if __name__ == '__main__':
    sys.exit(main())
