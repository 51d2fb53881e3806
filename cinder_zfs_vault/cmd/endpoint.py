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

"""Console script ``zfs-vault-endpoint``: the vault's door for compute hosts.

Runs on the vault host as the forced command of one compute host's SSH key
(``authorized_keys``, see vault_host/endpoint.py), once per request::

    zfs-vault-endpoint --host compute-1 --initiator iqn...:compute-1

The request is ``SSH_ORIGINAL_COMMAND``; for the single-host case and tests
it may follow ``--`` instead. Configuration: ``[zfs_vault_endpoint]`` of
``/etc/cinder-zfs-vault/cinder-zfs-vault.conf`` (``--config-file``). Logs go
to ``<state_path>/endpoint.log`` unless oslo.log is told otherwise: standard
output and error belong to the protocol.
"""

import os
import sys

from oslo_config import cfg
from oslo_log import log as logging

from cinder_zfs_vault import opts
from cinder_zfs_vault import protocol

PROJECT = 'cinder-zfs-vault'

cli_opts = [
    cfg.StrOpt('host', required=True,
               help='The compute host this key belongs to (its name as '
                    'nova reports it).'),
    cfg.StrOpt('initiator', required=True,
               help='Its iSCSI initiator name: origins are exported to '
                    'this initiator only.'),
]


def build(conf):
    """The Endpoint of ``conf`` (parsed). :raises InvalidInput."""
    from cinder_zfs_vault import executor
    from cinder_zfs_vault import lease as leaselib
    from cinder_zfs_vault import origin
    from cinder_zfs_vault import validation
    from cinder_zfs_vault.vault_host import authority
    from cinder_zfs_vault.vault_host import endpoint
    from cinder_zfs_vault import zfs

    group = conf.zfs_vault_endpoint
    leaselib.validate_host(conf.host)
    validation.initiator(conf.initiator)
    authority_ = authority.Authority(
        zfs.ZFS(executor.LocalExecutor()),
        origin.OriginExporter(group.portal_ip, group.portal_port),
        group.vault_dataset, group.state_path, keep=group.keep_sync_points,
        slot_timeout=group.slot_timeout)
    return endpoint.Endpoint(authority_, conf.host, conf.initiator,
                             stall_timeout=group.stall_timeout)


def main(argv=None, conf=None):
    """Answer one request. :returns: the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    request = os.environ.get('SSH_ORIGINAL_COMMAND', '')
    if '--' in argv:
        request = ' '.join(argv[argv.index('--') + 1:])
        argv = argv[:argv.index('--')]
    conf = conf if conf is not None else cfg.CONF
    conf.register_opts(opts.endpoint_opts, group=opts.ENDPOINT_GROUP)
    conf.register_cli_opts(cli_opts)
    logging.register_options(conf)
    try:
        conf(argv, project=PROJECT, prog=protocol.PROGRAM)
        state = conf.zfs_vault_endpoint.state_path
        os.makedirs(state, mode=0o700, exist_ok=True)
        if not conf.log_file and not conf.use_stderr:
            conf.set_override('log_file',
                              os.path.join(state, 'endpoint.log'))
        logging.setup(conf, protocol.PROGRAM)
        from cinder_zfs_vault.vault_host import endpoint
        return endpoint.serve(build(conf), request)
    except Exception as e:
        sys.stderr.write(protocol.error_line(e) + '\n')
        return 1


if __name__ == '__main__':
    sys.exit(main())
