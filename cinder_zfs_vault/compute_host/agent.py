"""The replica engine of one host, built from its configuration.

The agent on a compute host and the ``zfs-vault`` CLI build their
:class:`~cinder_zfs_vault.compute_host.replica.ReplicaEngine` here, from the
``[zfs_vault_agent]`` options (:data:`cinder_zfs_vault.opts.agent_opts`):

* the vault is reached only through its endpoint
  (:class:`~cinder_zfs_vault.compute_host.vault_client.VaultClient`): over
  OpenSSH with this host's own key (``zfs_vault_ssh_private_key``), whose
  forced command on the vault names this host, the vault's host key
  checked against ``zfs_vault_ssh_known_hosts``; when no vault host is set
  the vault is this host and the endpoint runs as a local process;
* this host's ``zfs`` and ``dmsetup`` run here;
* the read-only origin the vault exports for this host's initiator is
  reached on ``portal_ip:portal_port`` with os-brick's iSCSI connector
  (the initiator name is the one that connector reads, the ``initiator``
  that os-brick's ``get_connector_properties`` gives nova; asked of the
  iSCSI connector alone, because the others have side effects such as
  writing an NVMe host NQN);
* work in flight is kept in a TaskFlow logbook at
  ``<state_path>/logbook.sqlite`` (:func:`logbook_url`).
"""

import functools
import os

from oslo_concurrency import lockutils

from cinder_zfs_vault.compute_host import vault_client
from cinder_zfs_vault import exception
from cinder_zfs_vault import executor
from cinder_zfs_vault import opts
from cinder_zfs_vault import validation

#: Seconds os-brick waits for the origin's SCSI device after login.
DEVICE_SCAN_ATTEMPTS = 10


def register_opts(conf):
    """Register ``[zfs_vault_agent]`` on ``conf`` (idempotent)."""
    conf.register_opts(opts.agent_opts, group=opts.AGENT_GROUP)


def problems_path(conf):
    """``<state_path>/problems.json``: what the agent failed to pick up.

    Written by the running agent (service.Agent), read by ``zfs-vault
    list`` and ``show``.
    """
    register_opts(conf)
    return os.path.abspath(os.path.join(conf.zfs_vault_agent.state_path,
                                        'problems.json'))


def logbook_url(conf):
    """SQLAlchemy URL of the logbook, ``sqlite:////<state_path>/...``."""
    register_opts(conf)
    path = os.path.abspath(os.path.join(conf.zfs_vault_agent.state_path,
                                        'logbook.sqlite'))
    return 'sqlite:///' + path


def setup(conf):
    """Process-wide defaults the engine relies on; call once at start.

    The lease locks (``oslo_concurrency.lockutils``, external) default to
    ``<state_path>/locks``, so the agent and the CLI on one host agree
    without more configuration; ``[oslo_concurrency] lock_path`` still wins.
    os-brick's own defaults follow (``os_brick.setup``).
    """
    import os_brick
    register_opts(conf)
    lockutils.set_defaults(os.path.join(conf.zfs_vault_agent.state_path,
                                        'locks'))
    os_brick.setup(conf)


def make_vault_client(conf, initiator):
    """This host's :class:`VaultClient`: the endpoint over SSH, or local.

    :raises InvalidInput: SSH to the vault without a key or a known_hosts
        file (a host key is never learnt on first use).
    """
    group = conf.zfs_vault_agent
    if group.zfs_vault_ssh_host:
        if not group.zfs_vault_ssh_private_key or \
                not group.zfs_vault_ssh_known_hosts:
            raise exception.InvalidInput(
                '[%s] zfs_vault_ssh_host needs zfs_vault_ssh_private_key and '
                'zfs_vault_ssh_known_hosts' % opts.AGENT_GROUP)
        ssh = functools.partial(
            vault_client.ssh_transport, group.zfs_vault_ssh_host,
            group.zfs_vault_ssh_private_key, group.zfs_vault_ssh_known_hosts,
            port=group.zfs_vault_ssh_port, login=group.zfs_vault_ssh_login,
            conn_timeout=group.zfs_vault_ssh_conn_timeout)
        return vault_client.VaultClient(
            ssh(control_dir=os.path.join(group.state_path, 'ssh')),
            stream_transport=ssh())
    return vault_client.VaultClient(
        vault_client.local_transport(group.host, initiator))


def make_engine(conf, settings=None, notify=None, quiesce=None,
                vault=None):
    """The ReplicaEngine (compute_host/replica.py) of this host.

    :param conf: an ``oslo_config.cfg.ConfigOpts``; ``[zfs_vault_agent]``
        is registered on it if it is not yet.
    :param settings: ``replica.Settings``; from ``[zfs_vault_agent]``
        when None.
    :param notify: the engine's crash-point hook (tests only).
    :param quiesce: the engine's optional hook around a table swap (see
        ReplicaEngine); none by default.
    :param vault: a VaultClient instead of the one the options describe
        (:func:`make_vault_client`).
    :raises InvalidInput: a dataset or host name the core refuses
        (nothing ran).
    """
    from os_brick.initiator import connector as brick

    from cinder_zfs_vault.compute_host import dm
    from cinder_zfs_vault.compute_host import replica
    from cinder_zfs_vault import zfs

    register_opts(conf)
    group = conf.zfs_vault_agent
    validation.dataset(group.vault_dataset)
    validation.dataset(group.compute_dataset)
    # The lease owner this host writes, and the --host of its endpoint.
    validation.host(group.host)
    local = executor.LocalExecutor(timeout=group.command_timeout)
    iscsi = brick.InitiatorConnector.factory(
        'ISCSI', None, use_multipath=False,
        device_scan_attempts=DEVICE_SCAN_ATTEMPTS)
    # Without open-iscsi there is no initiator name (None): listing and
    # leases still work, and an attach is refused by the exporter.
    initiator = iscsi.get_initiator()
    return replica.ReplicaEngine(
        vault or make_vault_client(conf, initiator), zfs.ZFS(local),
        dm.DeviceMapper(
            local, lib=dm.LibDM.load(timeout=group.command_timeout)),
        iscsi, group.host,
        '%s:%d' % (group.portal_ip, group.portal_port),
        group.vault_dataset, group.compute_dataset,
        replica.settings(group) if settings is None else settings,
        notify=notify,
        quiesce=quiesce)


def check_identity(engine):
    """Refuse to serve under a name the vault does not know this host by.

    Three names must agree (issue 21, 9): nova's ``[DEFAULT] host`` (the
    connector's ``host``, which the driver grants the disk to and whose
    agent it calls), this agent's ``[zfs_vault_agent] host`` (its RPC
    server and lease owner) and the ``--host`` of its endpoint key on the
    vault (whom the vault leases to). The first two meet at the driver's
    ping (an agent under another name never answers); this checks the
    last two, and the initiator the vault exports origins to against the
    one os-brick logs in with.

    :raises InvalidInput: they differ (nothing ran but ``whoami``).
    :raises EndpointError: the vault did not answer.
    """
    me = engine.vault.whoami()
    if me['host'] != engine.host:
        raise exception.InvalidInput(
            'this agent is [zfs_vault_agent] host = %s, but its vault '
            'endpoint key names it --host %s: the vault would lease it '
            'nothing Cinder attaches here. Use one name (nova\'s [DEFAULT] '
            'host) in both' % (engine.host, me['host']))
    initiator = engine.connector.get_initiator()
    if initiator and me['initiator'] != initiator:
        raise exception.InvalidInput(
            'this host logs in as %s, but its vault endpoint key names '
            '--initiator %s: the vault would export origins to another '
            'initiator' % (initiator, me['initiator']))
    return me
