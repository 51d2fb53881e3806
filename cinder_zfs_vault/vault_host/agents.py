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

"""The compute hosts' agents, as cinder-volume's driver calls them.

Over oslo.messaging (cinder_zfs_vault/rpc.py), each call to one host's
agent and with a timeout of its own: a host whose agent does not answer a
ping gets a plain iSCSI connection; an attach or detach that does not
answer in time fails the Cinder call with an error that says so (the
agent's flow goes on, and a retry of the same call is idempotent).
"""

from oslo_log import log as logging
import oslo_messaging as messaging

from cinder_zfs_vault import exception
from cinder_zfs_vault import rpc

LOG = logging.getLogger(__name__)


class AgentUnreachable(exception.ZFSVaultError):
    """A host's agent did not answer a call in time."""


class Agents(object):
    """Calls to the agent of one compute host at a time.

    :param transport: an oslo.messaging RPC transport
        (:func:`cinder_zfs_vault.rpc.transport`).
    :param ping_timeout: seconds an agent has to answer a ping.
    :param attach_timeout: seconds for an attach (lease, origin export,
        iSCSI login, COW zvol, dm device on the host).
    :param detach_timeout: seconds for a detach (its final sync, unthrottled,
        and the vault's confirmation).
    """

    def __init__(self, transport, ping_timeout=10, attach_timeout=50,
                 detach_timeout=600):
        self.transport = transport
        self.ping_timeout = ping_timeout
        self.attach_timeout = attach_timeout
        self.detach_timeout = detach_timeout

    def _call(self, host, timeout, method, version='1.0', **kwargs):
        client = messaging.get_rpc_client(
            self.transport, rpc.target(host, version), timeout=timeout)
        try:
            return client.call({}, method, **kwargs)
        except messaging.MessagingTimeout:
            raise AgentUnreachable(
                'the zfs-vault-agent of %s did not answer %s in %d s'
                % (host, method, timeout))

    def alive(self, host):
        """Whether ``host`` runs an agent that answers now."""
        try:
            return self._call(host, self.ping_timeout, 'ping')['host'] == host
        except AgentUnreachable as e:
            LOG.info('%s: the volume is exported over iSCSI.', e.message)
            return False

    def attach(self, host, volume_id):
        """The device of ``volume_id`` on ``host`` (ReplicaEngine.attach).

        :returns: ``/dev/mapper/zvault-<id>`` on that host.
        :raises AgentUnreachable: no answer in ``attach_timeout``.
        :raises LeaseHeld, Fenced, ZFSVaultError: the agent's refusal.
        """
        return self._call(host, self.attach_timeout, 'attach',
                          volume_id=volume_id)['device_path']

    def detach(self, host, volume_id):
        """Return the disk to the vault (ReplicaEngine.detach on ``host``).

        A ping first: an agent that is down fails the detach in
        ``ping_timeout`` seconds, not ``detach_timeout``.
        :returns: the final sync point ``{'snapshot', 'guid', 'bytes',
            'seconds'}``, or None if no replica was there.
        :raises AgentUnreachable: no answer to the ping, or none to the
            detach in ``detach_timeout``; the replica (every write) stays
            on the host, leased.
        :raises Busy: the device is still open there.
        """
        self._call(host, self.ping_timeout, 'ping')
        return self._call(host, self.detach_timeout, 'detach',
                          volume_id=volume_id)

    def sync(self, host, volume_id):
        """A sync point of ``volume_id`` on ``host`` now (the agent's sync).

        A ping first, as :meth:`detach`; the sync gets ``detach_timeout``.
        :returns: the sync point ``{'snapshot', 'guid', 'bytes',
            'seconds'}``, confirmed by the vault by GUID.
        :raises AgentUnreachable: no answer in time (nothing changed on
            the vault but, maybe, a sync point the agent landed late).
        :raises Fenced, InvalidInput: the agent's refusal.
        """
        self._call(host, self.ping_timeout, 'ping')
        return self._call(host, self.detach_timeout, 'sync', version='1.1',
                          volume_id=volume_id)
