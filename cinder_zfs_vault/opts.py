"""Configuration options of the ZFS vault backend (oslo.config).

Set them in the backend's section of ``cinder.conf``; ``tox -e genconfig``
writes the sample to ``etc/cinder-zfs-vault/cinder-zfs-vault.conf.sample``
through the ``oslo.config.opts`` entry point :func:`list_opts`. Cinder's own
backend options (``reserved_percentage``, ``max_over_subscription_ratio``,
``target_ip_address``, ``target_port``, ``target_prefix``, ``volumes_dir``)
apply as for any driver.
"""

from oslo_config import cfg

from cinder_zfs_vault import validation

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
    cfg.HostAddressOpt('zfs_vault_ssh_host',
                       help='Vault host to run zfs on over SSH. Unset: the '
                            'vault is this host (cinder-volume runs beside '
                            'the pool).'),
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


def list_opts():
    """Options for oslo-config-generator (namespace cinder_zfs_vault)."""
    return [('backend_defaults', zfs_vault_opts)]
