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

"""cinder-rootwrap filters of the driver, for one vault root dataset.

cinder-volume runs unprivileged; its ``zfs`` commands run in the
driver's privsep daemon, which admits each with oslo.rootwrap's matcher
against the filters cinder-rootwrap's configuration names
(privileged.py): these, beside Cinder's ``volume.filters``. The filters
name each ``zfs`` subcommand and argument shape the driver runs, and
every dataset it names lies under the backend's ``zfs_vault_dataset``
(the root itself only where the driver reads it or sets its attributes):
a filter that took any dataset let ``zfs destroy -r rpool/ROOT/debian``
through (issue 21, 14). So the filters are made for the root::

    zfs-vault-rootwrap-filters --root tank/cinder \\
        > /etc/cinder/rootwrap.d/zfs-vault.filters

``etc/cinder-zfs-vault/rootwrap.d/zfs-vault.filters`` is this output for
the root ``vault`` (a unit test keeps them equal). Not allowed, so not a
way to root for Cinder's user: ``zfs receive``, ``send``, ``allow``,
``mount``, ``set`` of any property but ``volsize`` and this project's,
``zpool``, any dataset outside the root.
"""

import argparse
import re
import sys

from cinder_zfs_vault import validation

#: One component of a ZFS name, as validation.py allows it (no leading
#: '-': no argument can be an option).
NAME = r'[A-Za-z0-9][A-Za-z0-9_.:+-]*'
#: A property list of ``zfs get``/``zfs list -o`` (commas as \x2c: the
#: filters file is comma separated).
PROPS = r'[a-z0-9_.:\x2c-]+'
TYPES = (r'(volume|filesystem|snapshot|bookmark|all)'
         r'(\x2c(volume|filesystem|snapshot|bookmark|all))*')
OURS = r'org\.openstack\.zfsvault:[a-z0-9][a-z0-9_.-]*'
#: What ``zfs create``/``clone -o`` may set.
CREATE_PROP = (r'(volblocksize=[0-9]+|refreservation=(auto|none|[0-9]+)|'
               r'compression=[a-z0-9-]+|' + OURS + r'=[A-Za-z0-9._\x2c:/-]*)')
#: What ``zfs set`` may set.
SET_PROP = r'(volsize=[0-9]+|' + OURS + r'=[A-Za-z0-9._\x2c:/-]*)'

#: (name, argv after ``zfs``) of each filter; ``{root}`` is the root,
#: ``{child}`` a dataset directly under it, ``{snap}`` a snapshot of
#: one, ``{fs}`` the root or a child, ``{member}`` a child or a snapshot,
#: ``{any}`` any of them.
COMMANDS = (
    ('zfs_list', 'list -Hp -o {props} -t {types} -r {any}'),
    ('zfs_list_sorted', 'list -Hp -o {props} -t {types} -r -s {props} '
                        '{any}'),
    ('zfs_list_depth', 'list -Hp -o {props} -t {types} -d [0-9]+ {any}'),
    ('zfs_list_depth_sorted', 'list -Hp -o {props} -t {types} -d [0-9]+ '
                              '-s {props} {any}'),
    ('zfs_list_one', 'list -Hp -o {props} -t {types} {any}'),
    ('zfs_get', r'get -Hp -o property\x2cvalue {props} {any}'),
    ('zfs_get_local_1', r'get -Hp -o name\x2cproperty\x2cvalue\x2csource '
                        '{props} {fs}'),
    ('zfs_get_local_depth_1', r'get -Hp -d [0-9]+ -t filesystem\x2cvolume '
                              r'-o name\x2cproperty\x2cvalue\x2csource '
                              '{props} {fs}'),
    ('zfs_get_local_2', r'get -Hp -o name\x2cproperty\x2cvalue\x2csource '
                        '{props} {fs} {fs}'),
    ('zfs_get_local_depth_2', r'get -Hp -d [0-9]+ -t filesystem\x2cvolume '
                              r'-o name\x2cproperty\x2cvalue\x2csource '
                              '{props} {fs} {fs}'),
) + tuple(
    ('zfs_create%s_%d' % (sparse.replace(' -s', '_sparse'), n),
     'create%s%s -V [0-9]+ {child}' % (sparse, ' -o {create}' * n))
    for sparse in ('', ' -s') for n in range(4)
) + (
    ('zfs_destroy', 'destroy {member}'),
    ('zfs_destroy_r', 'destroy -r {member}'),
    ('zfs_destroy_d', 'destroy -d {snap}'),
    ('zfs_destroy_rd', 'destroy -r -d {snap}'),
    ('zfs_snapshot', 'snapshot {snap}'),
    ('zfs_snapshot_o', 'snapshot -o ' + OURS + r'=[A-Za-z0-9._\x2c:/-]* '
                       '{snap}'),
) + tuple(
    ('zfs_clone_%d' % n, 'clone%s {snap} {child}' % (' -o {create}' * n))
    for n in range(4)
) + (
    ('zfs_promote', 'promote {child}'),
    ('zfs_rename', 'rename {child} {child}'),
    ('zfs_rename_snapshot', 'rename {snap} {snap}'),
    ('zfs_rollback', 'rollback {snap}'),
) + tuple(
    ('zfs_set_%d' % n, 'set%s {any}' % (' {set}' * n)) for n in range(1, 5)
) + (
    ('zfs_inherit', 'inherit ' + OURS + ' {any}'),
    ('zfs_hold', 'hold %s {snap}' % NAME),
    ('zfs_release', 'release %s {snap}' % NAME),
)

HEADER = """\
# cinder-rootwrap filters for the ZFS vault driver, for the vault root
# dataset %(root)s: the zfs subcommands and argument shapes the driver
# runs, on datasets under that root, nothing more. Made by
# `zfs-vault-rootwrap-filters --root %(root)s`; install the output for
# your zfs_vault_dataset into /etc/cinder/rootwrap.d/ on the
# cinder-volume host (the vault host).
#
# Every dataset is a ZFS name as the driver validates it (no leading '-',
# so no argument can be an option); properties set are volsize,
# volblocksize, refreservation, compression and the project's own
# org.openstack.zfsvault:* user properties.
# Not allowed, so not a way to root for cinder's user: zfs receive, send,
# allow, mount, set of any other property (mountpoint, setuid, ...),
# zpool, any dataset outside %(root)s.
# tests/unit/test_rootwrap.py checks every command the driver's unit tests
# run against this file with oslo.rootwrap's own matcher.
#
# The driver runs these zfs commands in its own oslo.privsep daemon,
# started once through the first filter, as Cinder's own (volume.filters:
# privsep-rootwrap-sys_admin); the daemon admits each with oslo.rootwrap's
# matcher against the filters /etc/cinder/rootwrap.conf names, as
# cinder-rootwrap would. Its lease changes (grant, revoke, break: lock
# files, a kill of root's zfs receive, LIO's configfs) run there too.

[Filters]
"""

#: The privsep context of the driver (vault_host/privileged.py).
CONTEXT = 'cinder_zfs_vault.vault_host.privileged.vault_pctxt'
#: Its helper as oslo.privsep starts it (priv_context.helper_command)
#: through cinder-rootwrap, with cinder-volume's config files under /etc.
PRIVSEP = ('privsep-rootwrap-zfs_vault: RegExpFilter, privsep-helper, root, '
           'privsep-helper, --config-file, ' r'/etc/(?!\.\.).*, '
           '--privsep_context, ' + re.escape(CONTEXT) +
           ', --privsep_sock_path, /tmp/.*\n')


def filters(root):
    """The filters file (text) for the vault root dataset ``root``.

    :raises InvalidInput: ``root`` is no dataset name.
    """
    validation.dataset(root)
    escaped = re.escape(root)
    child = escaped + '/' + NAME
    snap = child + '@' + NAME
    parts = {'root': escaped, 'child': child, 'snap': snap,
             'fs': '(%s|%s)' % (escaped, child),
             'member': '(%s|%s)' % (child, snap),
             'any': '(%s|%s|%s)' % (escaped, child, snap),
             'props': PROPS, 'types': TYPES, 'create': CREATE_PROP,
             'set': SET_PROP}
    lines = [HEADER % {'root': root}, PRIVSEP]
    for name, argv in COMMANDS:
        args = ['zfs'] + argv.split(' ')
        lines.append('%s: RegExpFilter, zfs, root, %s\n' % (
            name, ', '.join(a.format(**parts) if '{' in a else a
                            for a in args)))
    return ''.join(lines)


def main(argv=None):
    """Print the filters for ``--root``. :returns: the exit status."""
    parser = argparse.ArgumentParser(
        prog='zfs-vault-rootwrap-filters',
        description='cinder-rootwrap filters of the ZFS vault driver for '
                    'one root dataset (zfs_vault_dataset).')
    parser.add_argument('--root', required=True,
                        help='the backend\'s zfs_vault_dataset, e.g. vault '
                             'or tank/cinder')
    args = parser.parse_args(argv)
    sys.stdout.write(filters(args.root))
    return 0


if __name__ == '__main__':
    sys.exit(main())
