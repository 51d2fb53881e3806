"""Console script ``zfs-vault-agent``: the replica agent of a compute host.

Reads ``[zfs_vault_agent]`` like ``zfs-vault`` (``--config-file``, else
``/etc/cinder-zfs-vault/cinder-zfs-vault.conf``), logs with oslo.log, then
runs :class:`cinder_zfs_vault.compute_host.service.Agent`: resume and
reconcile what a crash left, then sync the local replicas on schedule until
SIGTERM or SIGINT, when running syncs finish (up to 10 minutes) and it
exits. Beside it, the agent serves the driver's calls (attach, detach) over
oslo.messaging on ``[DEFAULT] transport_url`` (compute_host/rpc.py).
"""

import signal
import sys

from oslo_config import cfg
from oslo_log import log as logging

from cinder_zfs_vault.cmd.cli import app as cli_app
from cinder_zfs_vault.compute_host import agent
from cinder_zfs_vault.compute_host import rpc
from cinder_zfs_vault.compute_host import service
from cinder_zfs_vault import exception

LOG = logging.getLogger(__name__)

tick_opt = cfg.FloatOpt('tick', default=10.0, min=1.0,
                        help='Seconds between two looks at the schedule.')


def main(argv=None, conf=None):
    """Run the agent in the foreground. :returns: the exit status."""
    conf = conf if conf is not None else cfg.CONF
    agent.register_opts(conf)
    logging.register_options(conf)
    conf.register_cli_opt(tick_opt)
    conf(sys.argv[1:] if argv is None else argv, project=cli_app.PROJECT,
         prog='zfs-vault-agent')
    logging.setup(conf, 'zfs-vault-agent')
    backend = cli_app.Backend(conf)
    try:
        agent.check_identity(backend.engine)
    except exception.InvalidInput as e:
        LOG.error('zfs-vault-agent refuses to start: %s', e.message)
        return 1
    except exception.ZFSVaultError as e:
        # The vault may be rebooting: it refuses a wrong name by itself
        # (a lease only to the host its key names), and this host's
        # replicas still need their syncs.
        LOG.warning('Could not check this host\'s name with the vault: %s',
                    e.message)
    runner = service.Agent(backend.orchestrator, tick=conf.tick,
                           problems=agent.problems_path(conf))
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: runner.stop())
    LOG.info('zfs-vault-agent on %s, vault %s, pool %s',
             conf.zfs_vault_agent.host, conf.zfs_vault_agent.vault_dataset,
             conf.zfs_vault_agent.compute_dataset)
    server = rpc.server(conf, runner)
    if server is not None:
        server.start()
    try:
        runner.run()
    finally:
        if server is not None:
            # Calls being served finish (a detach's final sync).
            server.stop()
            server.wait()
    return 0


if __name__ == '__main__':
    sys.exit(main())
