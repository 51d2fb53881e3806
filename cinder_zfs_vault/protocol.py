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

"""The words compute hosts and the vault endpoint exchange.

A request is one SSH command line (``SSH_ORIGINAL_COMMAND`` under the forced
command of the host's key, as syncoid's and zrepl's restricted keys work):
a verb and its arguments, each a volume id, a generation, a snapshot name, a
GUID or a resume token, all validated by the vault before anything runs.
Control requests answer one JSON document on standard output; ``send``
answers a ``zfs send`` stream; ``receive`` reads one. A refusal or failure
exits 1 with one line on standard error::

    zfs-vault-endpoint: <ErrorClass>: <message>

and the client raises the same class (:func:`error_from`), so a compute
host tells "fenced" from "busy" from "no space" without parsing prose.

A stream (``send``, ``resume-send``, ``receive``) first waits for one of the
vault's transfer slots (vault_host/slots.py), up to the vault's
``slot_timeout``, and then writes :data:`SLOT_GRANTED` as one line on
standard error before a byte of the stream moves: the client starts its
stall clock there, so a stream queued behind ``sync_workers`` others is not
taken for a stalled one. A stream that then moves, averaged over the
vault's ``stall_timeout``, fewer than :data:`MIN_STREAM_RATE` bytes a second
is failed by the vault and its slot freed: a trickle is not progress, and a
host cannot hold the vault's slots with one; a host paces no stream below
:data:`MIN_PACE` (transfer.Throttle).
"""

from cinder_zfs_vault import exception
from cinder_zfs_vault import lease as leaselib
from cinder_zfs_vault import validation

PROGRAM = 'zfs-vault-endpoint'
SLOT_GRANTED = PROGRAM + ' slot granted'
#: Bytes/second a stream holding a slot must average over the vault's
#: ``stall_timeout`` (vault_host/endpoint.py).
MIN_STREAM_RATE = 4 * 1024
#: Bytes/second a host paces a stream at least (a volume's rate below it
#: is raised to it): twice the vault's floor, room for the bursts of a
#: paced stream (a chunk, then a sleep).
MIN_PACE = 2 * MIN_STREAM_RATE
#: Target name prefix of a disk's origin export; both sides name it
#: (the vault exports it, a compute host logs out of it after a restart).
ORIGIN_IQN_PREFIX = 'iqn.2010-10.org.openstack.zfsvault:origin-'


def origin_iqn(name):
    """The IQN of the origin export of zvol ``name`` (``volume-<id>``)."""
    return ORIGIN_IQN_PREFIX + validation.dataset(name)


#: verb -> (argument names); '[x]' is optional.
REQUESTS = {
    'lease': ('volume_id',),
    'release': ('volume_id', 'generation'),
    'export': ('volume_id', 'generation'),
    'unexport': ('volume_id', 'generation'),
    'info': ('volume_id',),
    'seed': ('volume_id', 'generation'),
    'send': ('volume_id', 'generation', 'snap'),
    'resume-send': ('volume_id', 'generation', 'token'),
    'receive': ('volume_id', 'generation', 'guid'),  # guid '-': unknown
    # A sync a caller waits on (a detach, a snapshot): ahead of the line.
    'receive-now': ('volume_id', 'generation', 'guid'),
    'confirm': ('volume_id', 'generation', 'snap', 'guid'),
    'slots': (),
    'schedule': (),
    'disks': (),
    'next-sync': ('volume_id', 'epoch'),
    'whoami': (),
}


class NotYours(exception.ZFSVaultError):
    """The asking host does not hold the lease of that disk."""


class EndpointError(exception.CommandFailed):
    """The endpoint failed in a way the protocol does not name."""


#: Error classes that cross the wire by name; anything else is
#: EndpointError on the client.
ERRORS = {cls.__name__: cls for cls in (
    leaselib.Fenced, leaselib.LeaseHeld, leaselib.NotGranted, NotYours,
    exception.InvalidInput, exception.NotFound, exception.Busy,
    exception.OutOfSpace,
    exception.Diverged, exception.CommandTimedOut, exception.CommandFailed,
    exception.HasDependents)}


def error_line(error):
    """The standard-error line that carries ``error`` to the client."""
    name = type(error).__name__
    for cls in type(error).__mro__:
        if cls.__name__ in ERRORS:
            name = cls.__name__
            break
    else:
        name = 'EndpointError'
    message = str(error).replace('\n', ' ')
    return '%s: %s: %s' % (PROGRAM, name, message)


def error_from(stderr, default_message):
    """The exception a client raises for the endpoint's standard error."""
    prefix = PROGRAM + ': '
    for line in reversed((stderr or '').splitlines()):
        if line.startswith(prefix):
            name, _, message = line[len(prefix):].partition(': ')
            return ERRORS.get(name, EndpointError)(message, stderr=stderr)
    return EndpointError('%s: %s' % (default_message, (stderr or '').strip()),
                         stderr=stderr)
