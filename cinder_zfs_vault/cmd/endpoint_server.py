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

"""Console script ``zfs-vault-endpoint-server``: the vault's endpoint server.

Runs on the vault host as root (a systemd service,
``etc/cinder-zfs-vault/systemd/zfs-vault-endpoint-server.service``) and
answers the requests the compute hosts' ``zfs-vault-endpoint`` stubs hand
it (vault_host/server.py). Configuration: ``[zfs_vault_endpoint]`` of
``/etc/cinder-zfs-vault/cinder-zfs-vault.conf`` (``--config-file``).
SIGTERM or SIGINT stop it; requests in flight are cut (their streams
resume later from their tokens).
"""

import signal
import sys

from oslo_config import cfg
from oslo_log import log as logging

from cinder_zfs_vault import opts

LOG = logging.getLogger(__name__)
PROJECT = 'cinder-zfs-vault'


def build(conf):
    """The Server and its listening socket for ``conf`` (parsed)."""
    from cinder_zfs_vault import executor
    from cinder_zfs_vault.vault_host import authority
    from cinder_zfs_vault.vault_host import origin
    from cinder_zfs_vault.vault_host import server
    from cinder_zfs_vault import zfs

    group = conf.zfs_vault_endpoint
    vault = authority.Authority(
        zfs.ZFS(executor.LocalExecutor(timeout=group.command_timeout)),
        origin.OriginExporter(group.portal_ip, group.portal_port),
        group.vault_dataset, group.state_path, keep=group.keep_sync_points,
        slot_timeout=group.slot_timeout, host_slots=group.host_slots)
    return (server.Server(vault, stall_timeout=group.stall_timeout),
            server.listen(group.socket_path))


def main(argv=None, conf=None):
    """Serve until SIGTERM. :returns: the exit status."""
    conf = conf if conf is not None else cfg.CONF
    conf.register_opts(opts.endpoint_opts, group=opts.ENDPOINT_GROUP)
    logging.register_options(conf)
    conf(sys.argv[1:] if argv is None else argv, project=PROJECT,
         prog='zfs-vault-endpoint-server')
    logging.setup(conf, 'zfs-vault-endpoint-server')
    server, sock = build(conf)
    # After a reboot, before any request: the origins the VMs still read.
    server.authority.restore_exports()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: server.stop())
    LOG.info('zfs-vault-endpoint-server on %s, vault %s',
             conf.zfs_vault_endpoint.socket_path,
             conf.zfs_vault_endpoint.vault_dataset)
    with sock:
        server.serve(sock)
    return 0


if __name__ == '__main__':
    sys.exit(main())
