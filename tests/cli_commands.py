"""The ``zfs-vault`` commands as setup.cfg declares them, for the tests.

The tests run from a source tree that need not be installed (the lab guest,
a git worktree), so stevedore may not see this tree's entry points. This
reads the ``zfs_vault.cli`` entry points from setup.cfg and imports each,
which is what an installed console script gets; a wrong entry fails here.
"""

import configparser
import importlib
import os

from cliff import commandmanager

SETUP_CFG = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), 'setup.cfg')


def entry_points(group='zfs_vault.cli'):
    """``{name: 'module:Class'}`` of one entry point group of setup.cfg."""
    parser = configparser.ConfigParser()
    parser.read(SETUP_CFG)
    result = {}
    for line in parser['entry_points'][group].strip().splitlines():
        name, _, target = line.partition('=')
        result[name.strip()] = target.strip()
    return result


def load(target):
    module, _, attr = target.partition(':')
    return getattr(importlib.import_module(module), attr)


def command_manager():
    """A cliff CommandManager with setup.cfg's commands."""
    manager = commandmanager.CommandManager(None)
    for name, target in entry_points().items():
        # cliff turns '_' in entry point names into spaces ('vault show').
        manager.add_command(name.replace('_', ' '), load(target))
    return manager
