"""Configuration options of the ZFS vault backend (oslo.config).

Set them in the backend's section of ``cinder.conf``; ``tox -e genconfig``
writes the sample to ``etc/cinder-zfs-vault/cinder-zfs-vault.conf.sample``
through the ``oslo.config.opts`` entry point :func:`list_opts`. Cinder's own
backend options (``reserved_percentage``, ``max_over_subscription_ratio``,
``target_ip_address``, ``target_port``, ``target_prefix``, ``volumes_dir``)
apply as for any driver.
"""

import socket

from oslo_config import cfg

from cinder_zfs_vault import validation

AGENT_GROUP = 'zfs_vault_agent'
ENDPOINT_GROUP = 'zfs_vault_endpoint'

zfs_vault_opts = [
    cfg.StrOpt('zfs_vault_dataset',
               default='vault',
               help='ZFS dataset (a pool, or a filesystem in one) under '
                    'which every volume is a zvol named volume-<id>.'),
    cfg.BoolOpt('zfs_vault_sparse',
                default=True,
                help='Create zvols sparse (thin, zfs create -s). When false '
                     'each zvol reserves its whole size (refreservation).'),
    cfg.IntOpt('zfs_vault_volblocksize',
               choices=list(validation.VOLBLOCKSIZES),
               help='volblocksize of new zvols in bytes; unset takes the '
                    'ZFS default. It cannot change after creation.'),
    cfg.StrOpt('zfs_vault_compression',
               default='lz4',
               choices=list(validation.COMPRESSIONS),
               help='compression property of new zvols.'),
    cfg.StrOpt('zfs_vault_target_helper',
               default='lioadm',
               choices=['lioadm', 'tgtadm'],
               help='Cinder target helper that exports zvols over iSCSI. '
                    'CHAP credentials are generated for every export.'),
]

#: How a compute host's agent reaches the vault endpoint.
ssh_opts = [
    cfg.HostAddressOpt('zfs_vault_ssh_host',
                       help='Vault host, reached over SSH. For the agent: '
                            'the host whose zfs-vault-endpoint it asks '
                            '(with its own key). Unset: the vault is this '
                            'host.'),
    cfg.PortOpt('zfs_vault_ssh_port', default=22,
                help='SSH port of the vault host.'),
    cfg.StrOpt('zfs_vault_ssh_login', default='root',
               help='SSH user on the vault host.'),
    cfg.StrOpt('zfs_vault_ssh_private_key',
               help='Private key file (RSA, PEM) for SSH to the vault host. '
                    'Host keys are checked against ssh_hosts_key_file; set '
                    'strict_ssh_host_key_policy = true to refuse unknown '
                    'ones.'),
    cfg.IntOpt('zfs_vault_ssh_conn_timeout', default=30, min=1,
               help='Seconds to wait for an SSH connection to the vault.'),
]


def _command_timeout(name, what):
    return cfg.IntOpt(name, default=300, min=1,
                      help='Seconds one %s may run before it is killed and '
                           'its operation fails (it stays resumable): a '
                           'wedged command must not hold a lock, a '
                           'transfer slot or a suspended device for ever.'
                           % what)


zfs_vault_opts += [
    _command_timeout('zfs_vault_command_timeout', 'zfs or zpool command of '
                     'the driver'),
    cfg.BoolOpt('zfs_vault_local_attach', default=True,
                help='Attach a sync-mode volume that is not multiattach '
                     'through a local replica (a "local" connection: '
                     '/dev/mapper/zvault-<id>, seeded and cut over behind '
                     'the VM) when the connector\'s host runs a '
                     'zfs-vault-agent that answers over '
                     'zfs_vault_agent_transport_url. Otherwise, and when '
                     'false, volumes attach over iSCSI.'),
    cfg.StrOpt('zfs_vault_agent_transport_url', secret=True,
               help='oslo.messaging URL of the compute hosts\' agents, '
                    'e.g. rabbit://cinder-zfs:PASS@HOST:5672/zfs-vault: '
                    'a virtual host of their own, where their account '
                    '(their [DEFAULT] transport_url) reaches nothing of '
                    'Cinder\'s. Unset: [DEFAULT] transport_url, Cinder\'s '
                    'own bus, where any compute host holding that account '
                    'could send cinder-volume\'s RPCs (a warning is '
                    'logged).'),
    cfg.IntOpt('zfs_vault_agent_ping_timeout', default=10, min=1,
               help='Seconds an agent has to answer before its host gets an '
                    'iSCSI connection instead of a local replica.'),
    cfg.IntOpt('zfs_vault_agent_attach_timeout', default=50, min=1,
               help='Seconds an agent has to make a volume\'s device (lease, '
                    'origin export, iSCSI login, COW zvol, dm device). '
                    'Keep it under cinder-api\'s rpc_response_timeout.'),
    cfg.IntOpt('zfs_vault_agent_detach_timeout', default=600, min=1,
               help='Seconds an agent has to return a volume to the vault '
                    '(its final sync and the vault\'s confirmation). Set '
                    'cinder-api\'s rpc_response_timeout above it: nova\'s '
                    'attachment delete waits for it there. A detach that '
                    'times out fails with nothing lost; run it again. '
                    'Also the time a snapshot of an attached volume has '
                    '(its sync point, after the seed and cut-over of a '
                    'disk still seeding).'),
    cfg.StrOpt('zfs_vault_state_path', default='/var/lib/zfs-vault',
               help='The vault endpoint\'s state_path ([zfs_vault_endpoint] '
                    'on this host): a force detach breaks the lease under '
                    'the lease locks kept there.'),
    cfg.HostAddressOpt('zfs_vault_ssh_host',
                       deprecated_for_removal=True,
                       deprecated_reason='cinder-volume runs on the vault '
                                         'host; a remote vault cannot be '
                                         'exported from here.',
                       help='Not supported: set, the driver refuses to start '
                            '(cinder-volume must run on the vault host).'),
]

#: The replica engine's bounds on a compute host, in ``[zfs_vault_agent]``
#: (compute_host/replica.py ``settings``).
engine_opts = [
    cfg.IntOpt('keep_local_sync_points', default=2, min=1,
               help='Sync points kept on the local replica; the newest the '
                    'vault confirmed is held as the next incremental base.'),
    cfg.IntOpt('merge_timeout', default=600, min=1,
               help='Seconds a cut-over waits for its snapshot-merge; past '
                    'it the cut-over fails (the VM keeps its device) and '
                    'the running agent tries it again.'),
    cfg.IntOpt('stall_timeout', default=120, min=1,
               help='Seconds a seed or sync stream may stand still (after '
                    'the vault granted it a transfer slot) before it is '
                    'stopped; it resumes from its token.'),
    cfg.IntOpt('device_timeout', default=60, min=1,
               help='Seconds to wait for a zvol\'s device node (udev).'),
    cfg.IntOpt('slot_timeout', default=3900, min=1,
               help='Seconds a stream waits for the vault\'s transfer slot '
                    'grant; keep it above the vault\'s own slot_timeout, '
                    'which refuses first with a clear error.'),
]

#: The replica agent and the ``zfs-vault`` CLI of one host, in the
#: ``[zfs_vault_agent]`` group; the SSH options are the backend's, repeated.
agent_opts = [
    cfg.StrOpt('host',
               default=socket.gethostname(),
               sample_default='<this host name>',
               help='Name of this host: the lease owner written on the '
                    'vault zvols of the disks it holds. An RFC 1123 host '
                    'name: ASCII letters, digits, "-" and ".".'),
    cfg.StrOpt('vault_dataset',
               default='vault',
               help='Dataset on the vault under which every volume is a '
                    'zvol named volume-<id> (zfs_vault_dataset of the '
                    'backend).'),
    cfg.StrOpt('compute_dataset',
               default='compute',
               help='Dataset on this host that holds the local replicas.'),
    cfg.HostAddressOpt('portal_ip',
                       default='127.0.0.1',
                       help='Address of the vault on which this host reaches '
                            'the read-only iSCSI origin of a disk being '
                            'seeded.'),
    cfg.PortOpt('portal_port',
                default=3260,
                help='iSCSI port of that portal.'),
    cfg.StrOpt('state_path',
               default='/var/lib/zfs-vault',
               help='Directory of the agent\'s state: the TaskFlow logbook '
                    '(logbook.sqlite) of work in flight, and the flow locks '
                    '(locks/) unless [oslo_concurrency] lock_path is set.'),
    cfg.StrOpt('zfs_vault_ssh_known_hosts',
               help='known_hosts file holding the vault\'s SSH host key. '
                    'Required with zfs_vault_ssh_host: unknown host keys '
                    'are refused, never learnt.'),
    _command_timeout('command_timeout', 'zfs, dmsetup or iscsiadm command '
                     'of the agent'),
] + engine_opts + ssh_opts


#: The vault endpoint (``zfs-vault-endpoint``) on the vault host, in the
#: ``[zfs_vault_endpoint]`` group.
endpoint_opts = [
    cfg.StrOpt('vault_dataset',
               default='vault',
               help='Dataset under which every volume is a zvol named '
                    'volume-<id> (zfs_vault_dataset of the backend).'),
    cfg.HostAddressOpt('portal_ip',
                       default='127.0.0.1',
                       help='Address of this vault on which compute hosts '
                            'reach origin exports.'),
    cfg.PortOpt('portal_port', default=3260,
                help='iSCSI port of that portal.'),
    cfg.StrOpt('state_path',
               default='/var/lib/zfs-vault',
               help='Directory of the vault\'s state: lease locks '
                    '(locks/, shared with the driver and the operator CLI '
                    'on this host), syncs in flight (landing/) and transfer '
                    'slots (slots/, slots.log).'),
    cfg.StrOpt('socket_path',
               default='/run/zfs-vault/endpoint.sock',
               help='Unix socket the endpoint server listens on (root '
                    'only); the zfs-vault-endpoint stubs of the compute '
                    'hosts\' keys hand it their requests there.'),
    cfg.IntOpt('keep_sync_points', default=3, min=1,
               help='Sync points kept on the vault per volume as restore '
                    'points.'),
    cfg.IntOpt('slot_timeout', default=3600, min=1,
               help='Seconds a transfer waits for one of the vault\'s '
                    'sync_workers slots before it is refused.'),
    cfg.IntOpt('stall_timeout', default=120, min=1,
               help='Seconds a stream into the vault may stand still '
                    'before the receive is stopped (it resumes later).'),
    cfg.IntOpt('host_slots', default=0, min=0,
               help='Seed and periodic sync slots one compute host may '
                    'hold at once, so that one host cannot take them all; '
                    '0: one less than those slots (the vault\'s '
                    'sync_workers but the one kept for the syncs a caller '
                    'waits on; at least 1), one always left to the other '
                    'hosts.'),
    _command_timeout('command_timeout', 'zfs command of the endpoint'),
]


def list_opts():
    """Options for oslo-config-generator (namespace cinder_zfs_vault)."""
    return [('backend_defaults', zfs_vault_opts),
            (AGENT_GROUP, agent_opts),
            (ENDPOINT_GROUP, endpoint_opts)]
