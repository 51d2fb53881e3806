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

"""``zfs-vault``: the operator's view of the vault and this host's replicas.

What img-storage's rocks commands and Archipelago's ``vlmc`` offered, on the
replica engine: list disks with their state, lease and sync lag; attach,
sync and detach a disk on this host; take, release or break a lease; show
the device-mapper devices of this host. Built on cliff: every command is an
entry point in the ``zfs_vault.cli`` namespace (``setup.cfg``), and every
listing takes cliff's ``-f json|yaml|csv|value|table``.

The configuration is the ``[zfs_vault_agent]`` group of the agent
(:mod:`cinder_zfs_vault.compute_host.agent`), read with oslo.config from
``--config-file`` (repeatable), or else from the usual places for the
project ``cinder-zfs-vault`` (``/etc/cinder-zfs-vault/cinder-zfs-vault.conf``
among them). The CLI runs as root: ``zfs``, ``dmsetup`` and LIO need it.

Refusals (a bad name, a missing volume, a lease held elsewhere) print one
line on stderr and exit 1 before anything changes; arguments argparse
itself refuses (a missing value, an unknown option) print one line too and
exit 2. Every line the application logs on the console, and every value a
listing shows from outside (a lease owner set by hand with ``zfs set``),
goes through :func:`~cinder_zfs_vault.cmd.cli.format.printable`: a
newline, a terminal escape or a look-alike letter shows escaped, on one
line, never raw.

This module holds the application (:class:`ZFSVaultApp`, the console
script's :func:`main`) and what the commands run on (:class:`Backend`,
and :class:`EndpointVault` for the vault seen from a compute host); the
commands are in the modules of their resource, next to this one.
"""

import functools
import logging
import os
import sys
import warnings

from cliff import app
from cliff import commandmanager
from oslo_config import cfg
from oslo_utils import fileutils

from cinder_zfs_vault.cmd.cli import format as cli_format
from cinder_zfs_vault.compute_host import agent
from cinder_zfs_vault import exception
from cinder_zfs_vault import lease as leaselib
from cinder_zfs_vault import opts
from cinder_zfs_vault import validation

NAMESPACE = 'zfs_vault.cli'
PROJECT = 'cinder-zfs-vault'
PROG = 'zfs-vault'


# -- what the commands run on ------------------------------------------------

class Backend(object):
    """The replica engine of this host and its orchestrator.

    Each is made on first use, so that a command that needs neither (or
    only the engine) opens no logbook.
    """

    def __init__(self, conf):
        self.conf = conf

    @functools.cached_property
    def engine(self):
        if os.geteuid() == 0:
            # As root, os-brick's privileged calls run in this process:
            # privsep-helper through sudo would only hand root back.
            from os_brick import privileged
            privileged.default.set_client_mode(False)
        agent.setup(self.conf)
        return agent.make_engine(self.conf)

    @functools.cached_property
    def vault(self):
        """The vault's Authority (vault_host/authority.py), on the vault.

        Built from this host's ``[zfs_vault_endpoint]`` options: listing
        every disk, taking and breaking leases and setting attributes are
        the vault operator's, done where the pool is. A compute host
        reaches the vault only through its endpoint.
        """
        if self.conf.zfs_vault_agent.zfs_vault_ssh_host:
            return EndpointVault(self.engine.vault,
                                 self.conf.zfs_vault_agent.vault_dataset)
        from cinder_zfs_vault import executor
        from cinder_zfs_vault.vault_host import authority
        from cinder_zfs_vault.vault_host import origin
        from cinder_zfs_vault import zfs
        group = self.conf.zfs_vault_endpoint
        return authority.Authority(
            zfs.ZFS(executor.LocalExecutor(timeout=group.command_timeout)),
            origin.OriginExporter(group.portal_ip, group.portal_port),
            group.vault_dataset, group.state_path)

    @functools.cached_property
    def orchestrator(self):
        from cinder_zfs_vault.compute_host import flows
        fileutils.ensure_tree(self.conf.zfs_vault_agent.state_path,
                              mode=0o700)
        return flows.Orchestrator(self.engine, agent.logbook_url(self.conf))

    def problems(self):
        """What the running agent failed to do, by volume id (service.py)."""
        from cinder_zfs_vault.compute_host import service
        return service.read_problems(agent.problems_path(self.conf))


class EndpointVault(object):
    """The vault as a compute host's CLI sees it: through its endpoint.

    Only the disks this host holds are visible, and nothing on the vault
    can be changed from here: leases are taken by attach and given back
    by detach; breaking one or setting attributes is the vault operator's
    (``zfs-vault`` on the vault host).
    """

    def __init__(self, client, vault_root):
        self.client = client
        self.vault_root = vault_root

    def disks(self, volume_id=None):
        """This host's disks, as the vault has them (Authority.disks).

        A disk it does not hold is shown unleased, as far as it may know:
        an attach asks the vault, which refuses what it must.
        """
        disks = {}
        for vid, disk in self.client.disks().items():
            disk['lease'] = leaselib.Lease(**disk['lease'])
            disks[vid] = disk
        if volume_id is not None:
            dataset = validation.volume_dataset(self.vault_root, volume_id)
            return {volume_id: disks.get(volume_id) or {
                'dataset': dataset, 'size': None, 'last_sync': None,
                'lease': leaselib.FREE}}
        return disks

    def __getattr__(self, name):
        raise exception.InvalidInput(
            'this is a compute host: it reaches the vault only through '
            'its endpoint; run this command on the vault host')


# -- the application ----------------------------------------------------------

class ZFSVaultApp(app.App):
    """The cliff application ``zfs-vault``.

    :param conf: ``oslo_config.cfg.ConfigOpts`` to load (the global one by
        default: Cinder's SSH host key options and the lock path live
        there).
    :param command_manager: cliff ``CommandManager``; by default the
        commands of the ``zfs_vault.cli`` entry points.
    """

    NAME = PROG

    def __init__(self, conf=None, command_manager=None, stdin=None,
                 stdout=None, stderr=None):
        super(ZFSVaultApp, self).__init__(
            description=__doc__.splitlines()[0],
            version=_version(),
            command_manager=(command_manager
                             or commandmanager.CommandManager(NAMESPACE)),
            stdin=stdin, stdout=stdout, stderr=stderr,
            deferred_help=True)
        self.conf = conf if conf is not None else cfg.CONF
        self._backend = None
        self._log_handlers = []

    def build_option_parser(self, description, version,
                            argparse_kwargs=None):
        parser = super(ZFSVaultApp, self).build_option_parser(
            description, version, argparse_kwargs)
        parser.prog = PROG  # not sys.argv[0]: python -m, a wrapper
        self._one_line_errors(parser)
        parser.add_argument(
            '--config-file', action='append', default=[], metavar='PATH',
            help='oslo.config file with the [zfs_vault_agent] group '
                 '(repeatable). Default: cinder-zfs-vault.conf in the '
                 'usual places (/etc/cinder-zfs-vault/).')
        return parser

    def _one_line_errors(self, parser):
        """Make ``parser`` refuse in one printable line on our stderr.

        argparse prints its usage and then echoes the bad argument raw
        (a terminal escape would reach the terminal); exits 2 as it does.
        """
        def error(message):
            self.stderr.write('%s: error: %s (see %s --help)\n' % (
                parser.prog, cli_format.printable(message), parser.prog))
            raise SystemExit(2)
        parser.error = error

    def prepare_to_run_command(self, cmd):
        super(ZFSVaultApp, self).prepare_to_run_command(cmd)
        # cliff asks the command for its parser right after this.
        get_parser = cmd.get_parser

        def get_one_line_parser(prog_name):
            parser = get_parser(prog_name)
            self._one_line_errors(parser)
            return parser
        cmd.get_parser = get_one_line_parser

    def initialize_app(self, argv):
        agent.register_opts(self.conf)
        self.conf.register_opts(opts.endpoint_opts, group=opts.ENDPOINT_GROUP)
        self.conf([], project=PROJECT, prog=PROG,
                  default_config_files=self.options.config_file or None)

    def make_backend(self):
        """What the commands run on: ``.engine`` and ``.orchestrator``.

        The one factory of both; tests override it to inject fakes.
        """
        return Backend(self.conf)

    @property
    def backend(self):
        if self._backend is None:
            self._backend = self.make_backend()
        return self._backend

    @property
    def engine(self):
        return self.backend.engine

    @property
    def orchestrator(self):
        return self.backend.orchestrator

    @property
    def vault(self):
        return self.backend.vault

    def problems(self):
        """``{volume id: problem}`` of the running agent on this host."""
        return self.backend.problems()

    @property
    def attributes(self):
        """:class:`~cinder_zfs_vault.attributes.Attributes` of the vault."""
        return self.vault.attributes

    def progress(self, label):
        """A progress bar on stderr, or None when stdout is not a terminal."""
        isatty = getattr(self.stdout, 'isatty', None)
        if not (isatty and isatty()):
            return None
        return cli_format.ProgressBar(self.stderr, label)

    def configure_logging(self):
        root = logging.getLogger('')
        before = list(root.handlers)
        super(ZFSVaultApp, self).configure_logging()
        self._log_handlers = [h for h in root.handlers if h not in before]
        if self.options.verbose_level < 2:
            # cliff shows INFO by default: ours (leases taken, exports) is
            # for the operator; the libraries' (alembic, oslo.service,
            # os-brick) only with -vv or --debug.
            for handler in self._log_handlers:
                handler.addFilter(_OurInfo())
        for handler in self._log_handlers:
            handler.addFilter(_Printable())

    def run(self, argv):
        try:
            return super(ZFSVaultApp, self).run(argv)
        except SystemExit as e:  # argparse's refusal (said), or --help
            return e.code or 0
        finally:
            # Leave logging as it was: tests run the app many times in one
            # process, and each run adds cliff's console handler.
            for handler in self._log_handlers:
                logging.getLogger('').removeHandler(handler)
            self._log_handlers = []


class _OurInfo(logging.Filter):
    """Warnings and errors of anyone; below that, only this project's."""

    def filter(self, record):
        return (record.levelno >= logging.WARNING
                or record.name.startswith('cinder_zfs_vault'))


class _Printable(logging.Filter):
    """Each console line printable (format.printable), so one line.

    A failed command's message (cliff logs the exception) may hold what
    came from outside: a lease owner, a name typed, a command's stderr.
    """

    def filter(self, record):
        message = record.getMessage()
        shown = cli_format.printable(message)
        if shown is not message:
            record.msg, record.args = shown, ()
        return True


@functools.lru_cache(maxsize=1)
def _version():
    """This package's version, read once a process.

    pbr reads it from git when the tree is not installed (five git
    commands: each in-process run of the CLI paid them again).
    """
    try:
        import pbr.version
        return pbr.version.VersionInfo(PROJECT).version_string()
    except Exception:  # a source tree that is not installed
        return 'unknown'


def main(argv=None, conf=None, command_manager=None):
    """Console script ``zfs-vault``. :returns: the exit status."""
    # os-brick's privsep imports eventlet, which warns about itself on
    # every run; nothing an operator of this command can act on.
    warnings.filterwarnings('ignore', message='(?s).*Eventlet is deprecated')
    zfs_vault = ZFSVaultApp(conf=conf, command_manager=command_manager)
    return zfs_vault.run(sys.argv[1:] if argv is None else argv)


if __name__ == '__main__':
    sys.exit(main())
