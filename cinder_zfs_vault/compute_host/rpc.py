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

"""The agent's RPC server: what cinder-volume's driver asks of this host.

Served on topic ``zfs-vault-agent``, server = this host's name
(``[zfs_vault_agent] host``, which must be the name nova reports in the
connector: its ``host`` option, the host name by default). Each call runs
a flow of the orchestrator (flows.py), so a call cut short by a killed
agent leaves a flow in the logbook that the restarted agent finishes
(service.Agent.start); every flow is idempotent, so the driver's retry of
the same call is safe.
"""

from oslo_log import log as logging
import oslo_messaging as messaging

from cinder_zfs_vault import rpc

LOG = logging.getLogger(__name__)


class AgentEndpoint(object):
    """The calls, version :data:`cinder_zfs_vault.rpc.VERSION`.

    :param agent: the running :class:`~.service.Agent` of this host.
    """

    target = messaging.Target(version=rpc.VERSION)

    def __init__(self, agent):
        self.agent = agent

    def ping(self, context):
        """:returns: ``{'host': name}``: this agent runs and answers."""
        return {'host': self.agent.replica.host}

    def attach(self, context, volume_id):
        """Give the VM a device now; seed and cut over behind it.

        ReplicaEngine.attach through the orchestrator, then the seed is
        started in a thread of the agent (it waits for a transfer slot of
        the vault).
        :returns: ``{'device_path': '/dev/mapper/zvault-<id>'}``.
        :raises LeaseHeld, Fenced, InvalidInput, ...: as the engine.
        """
        device = self.agent.orchestrator.attach(volume_id)
        LOG.info('Volume %s attached at %s; seeding it.', volume_id, device)
        self.agent.seed_soon(volume_id)
        return {'device_path': device}

    def detach(self, context, volume_id):
        """Return the disk to the vault: unmap, final sync, retire.

        The replica is destroyed only once the vault confirmed the final
        sync point by GUID (ReplicaEngine.detach).
        :returns: the final sync point (``SyncResult`` as a dict), or None
            when no replica was on this host.
        :raises Busy: the device is still open.
        """
        # A seed still running goes on unthrottled: the detach waits on it.
        with self.agent.replica.urgency.waiting(volume_id):
            synced = self.agent.orchestrator.detach(volume_id)
        self.agent.forget(volume_id)
        LOG.info('Volume %s returned to the vault (%s).', volume_id, synced)
        return synced._asdict() if synced else None

    def sync(self, context, volume_id):
        """A sync point now, unthrottled (version 1.1).

        Every write the VM made before the call is in it: the driver keeps
        it as a Cinder snapshot of the attached volume. A disk still
        seeding is seeded and cut over first, unthrottled (a seed flow
        already running goes on without its ``download_rate`` and this
        call waits for its flow lock): the snapshot waits, it does not
        fail. It all fits in the driver's
        ``zfs_vault_agent_detach_timeout``, or the call fails and a retry
        goes on from where the seed got.
        :returns: the sync point (``SyncResult`` as a dict).
        :raises InvalidInput: no replica nor device of the disk here, or
            non-sync mode. :raises Fenced: this host's lease was broken.
        """
        with self.agent.replica.urgency.waiting(volume_id):
            synced = self.agent.orchestrator.sync(volume_id, rate=0,
                                                  complete=True)
        LOG.info('Volume %s synced on request (%s).', volume_id, synced)
        return synced._asdict()


def server(conf, agent, transport=None):
    """The RPC server of ``agent``, not started; None without a transport.

    :param conf: the agent's ConfigOpts (``[DEFAULT] transport_url``,
        ``[zfs_vault_agent] host``).
    :param transport: one already made (the tests' in-process one).
    """
    transport = transport or rpc.transport(conf)
    if transport is None:
        LOG.warning('No [DEFAULT] transport_url: the driver cannot call this '
                    'agent, and volumes attach here over iSCSI.')
        return None
    return messaging.get_rpc_server(
        transport, rpc.target(conf.zfs_vault_agent.host),
        [AgentEndpoint(agent)], executor='threading',
        access_policy=messaging.DefaultRPCAccessPolicy)
