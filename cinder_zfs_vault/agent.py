"""The replica engine of one host, built from its configuration.

The agent on a compute host and the ``zfs-vault`` CLI build their
:class:`~cinder_zfs_vault.replica.ReplicaEngine` here, from the
``[zfs_vault_agent]`` options (:data:`cinder_zfs_vault.opts.agent_opts`):

* the vault's ``zfs`` runs over SSH (:class:`~cinder_zfs_vault.executor.
  SSHExecutor`) when ``zfs_vault_ssh_host`` is set, else on this host;
* this host's ``zfs`` and ``dmsetup`` run here;
* the read-only origin is exported on ``portal_ip:portal_port`` and reached
  with os-brick's iSCSI connector, under this host's initiator name (read by
  that connector, the ``initiator`` that os-brick's
  ``get_connector_properties`` gives nova; asked of the iSCSI connector
  alone, because the others have side effects such as writing an NVMe
  host NQN);
* work in flight is kept in a TaskFlow logbook at
  ``<state_path>/logbook.sqlite`` (:func:`logbook_url`).
"""

import os

from oslo_concurrency import lockutils
from oslo_config import cfg

from cinder_zfs_vault import executor
from cinder_zfs_vault import opts
from cinder_zfs_vault import validation

#: Seconds os-brick waits for the origin's SCSI device after login.
DEVICE_SCAN_ATTEMPTS = 10


def register_opts(conf):
    """Register ``[zfs_vault_agent]`` on ``conf`` (idempotent)."""
    conf.register_opts(opts.agent_opts, group=opts.AGENT_GROUP)


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


def make_vault_executor(conf):
    """Executor for the vault's ``zfs``: SSH when a vault host is set.

    Host keys are checked against Cinder's ``ssh_hosts_key_file`` (in
    ``[DEFAULT]`` of the global configuration, which Cinder's SSH pool
    reads), for commands and for the OpenSSH streams of seeds and syncs.
    """
    group = conf.zfs_vault_agent
    if group.zfs_vault_ssh_host:
        from cinder import ssh_utils  # noqa: F401 (registers ssh_* options)
        return executor.SSHExecutor(
            group.zfs_vault_ssh_host, port=group.zfs_vault_ssh_port,
            login=group.zfs_vault_ssh_login,
            private_key=group.zfs_vault_ssh_private_key,
            conn_timeout=group.zfs_vault_ssh_conn_timeout,
            known_hosts=cfg.CONF.ssh_hosts_key_file)
    return executor.LocalExecutor()


def make_engine(conf, settings=None, notify=None, quiesce=None,
                vault_executor=None):
    """The :class:`~cinder_zfs_vault.replica.ReplicaEngine` of this host.

    :param conf: an ``oslo_config.cfg.ConfigOpts``; ``[zfs_vault_agent]``
        is registered on it if it is not yet.
    :param settings: :data:`~cinder_zfs_vault.replica.Settings`; the
        engine's defaults when None.
    :param notify: the engine's crash-point hook (tests only).
    :param quiesce: the engine's optional hook around a table swap (see
        ReplicaEngine); none by default.
    :param vault_executor: how to reach the vault's ``zfs``, instead of
        what the options say (:func:`make_vault_executor`).
    :raises InvalidInput: a dataset name the core refuses (nothing ran).
    """
    from os_brick.initiator import connector as brick

    from cinder_zfs_vault import dm
    from cinder_zfs_vault import origin
    from cinder_zfs_vault import replica
    from cinder_zfs_vault import zfs

    register_opts(conf)
    group = conf.zfs_vault_agent
    validation.dataset(group.vault_dataset)
    validation.dataset(group.compute_dataset)
    local = executor.LocalExecutor()
    iscsi = brick.InitiatorConnector.factory(
        'ISCSI', None, use_multipath=False,
        device_scan_attempts=DEVICE_SCAN_ATTEMPTS)
    # Without open-iscsi there is no initiator name (None): listing and
    # leases still work, and an attach is refused by the exporter.
    initiator = iscsi.get_initiator()
    return replica.ReplicaEngine(
        zfs.ZFS(vault_executor or make_vault_executor(conf)), zfs.ZFS(local),
        dm.DeviceMapper(local),
        origin.OriginExporter(group.portal_ip, group.portal_port), iscsi,
        group.host, initiator, group.vault_dataset, group.compute_dataset,
        replica.DEFAULTS if settings is None else settings, notify=notify,
        quiesce=quiesce)
