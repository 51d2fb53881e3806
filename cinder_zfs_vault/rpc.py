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

"""The driver's calls to the compute hosts' agents over oslo.messaging.

DESIGN.md, "Messages": RabbitMQ, which every OpenStack cloud runs; topic
:data:`TOPIC`, server = the compute host's name as nova reports it in the
connector (``connector['host']``). The agent serves
(compute_host/rpc.py), cinder-volume calls (vault_host/agents.py).

Errors of the core cross the wire as themselves: oslo.messaging rebuilds
an exception of a module in :data:`ALLOWED_EXMODS` as a subclass of its
class (``deserialize_remote_exception`` in ``oslo_messaging/_utils.py``),
so the driver maps a remote :class:`~cinder_zfs_vault.lease.LeaseHeld`
as it maps a local one.
"""

from oslo_config import cfg
import oslo_messaging as messaging

TOPIC = 'zfs-vault-agent'
#: 1.0: ping, attach, detach. 1.1: sync.
VERSION = '1.1'
ALLOWED_EXMODS = ['cinder_zfs_vault.exception', 'cinder_zfs_vault.lease']


def transport(conf, url=None):
    """An RPC transport from ``url``, else ``[DEFAULT] transport_url``.

    :returns: the transport, or None when neither is set (the default
        ``transport_url``, ``rabbit://`` on localhost as guest, is no
        deployment's: an agent then serves no calls).
    """
    if url is not None:
        return messaging.get_rpc_transport(
            conf, url=url, allowed_remote_exmods=ALLOWED_EXMODS)
    # Made first: it registers transport_url on conf.
    found = messaging.get_rpc_transport(conf,
                                        allowed_remote_exmods=ALLOWED_EXMODS)
    if conf.get_location('transport_url').location == \
            cfg.Locations.opt_default:
        found.cleanup()
        return None
    return found


def target(host=None, version=VERSION):
    """The agents' target; ``host`` names one agent.

    :param version: the version a call needs (an older agent refuses a
        newer one's calls, not those it knows).
    """
    return messaging.Target(topic=TOPIC, server=host, version=version)
