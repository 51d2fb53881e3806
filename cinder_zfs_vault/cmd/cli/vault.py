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

"""``zfs-vault vault show``, ``vault set`` and ``vault unset``.

The vault's attributes: the defaults of its disks (sync frequency and
speeds) and its sync workers.
"""

from cliff import command
from cliff import show

from cinder_zfs_vault import attributes as attrs
from cinder_zfs_vault.cmd.cli import common
from cinder_zfs_vault.cmd.cli import format as cli_format


class ShowVault(show.ShowOne):
    """Show the vault's attributes: the defaults of its disks.

    'Set here' names those set on the vault; the others are the built-in
    defaults.
    """

    def take_action(self, parsed_args):
        attributes = self.app.attributes
        columns, values = cli_format.attribute_values(
            attributes.vault(), attributes.explicit_vault())
        return (('Vault',) + columns,
                [attributes.vault_root] + values)


class SetVault(command.Command):
    """Set vault attributes: sync workers, default frequency and speeds."""

    def get_parser(self, prog_name):
        parser = super(SetVault, self).get_parser(prog_name)
        common.add_attribute_options(parser, attrs.VAULT_ATTRIBUTES)
        return parser

    def take_action(self, parsed_args):
        values = attrs.parse_vault(
            **common.given_attributes(parsed_args, attrs.VAULT_ATTRIBUTES))
        self.app.attributes.set_vault(**values)


class UnsetVault(command.Command):
    """Unset vault attributes: back to the built-in defaults."""

    def get_parser(self, prog_name):
        parser = super(UnsetVault, self).get_parser(prog_name)
        common.add_attribute_names(parser, attrs.VAULT_ATTRIBUTES)
        return parser

    def take_action(self, parsed_args):
        self.app.attributes.unset_vault(*attrs.attribute_names(
            'vault', attrs.VAULT_ATTRIBUTES, parsed_args.names))
