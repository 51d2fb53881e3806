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

"""The agent's start: the names that must agree with the vault's."""

import types

import testtools

from cinder_zfs_vault.compute_host import agent
from cinder_zfs_vault import exception

IQN = 'iqn.2004-10.org.zfslab:compute-1'


class IdentityTest(testtools.TestCase):

    def engine(self, host, initiator, key_host='compute-1', key_iqn=IQN):
        vault = types.SimpleNamespace(
            whoami=lambda: {'host': key_host, 'initiator': key_iqn})
        connector = types.SimpleNamespace(get_initiator=lambda: initiator)
        return types.SimpleNamespace(vault=vault, connector=connector,
                                     host=host)

    def test_the_same_names_pass(self):
        self.assertEqual({'host': 'compute-1', 'initiator': IQN},
                         agent.check_identity(self.engine('compute-1', IQN)))

    def test_a_host_name_the_key_does_not_have_is_refused(self):
        # Issue 21, 9: the agent's host differed from its key's --host,
        # and a detach "succeeded" without the final sync.
        e = self.assertRaises(exception.InvalidInput, agent.check_identity,
                              self.engine('compute-1.lab', IQN))
        self.assertIn('--host compute-1', e.message)

    def test_an_initiator_the_key_does_not_have_is_refused(self):
        e = self.assertRaises(exception.InvalidInput, agent.check_identity,
                              self.engine('compute-1', IQN + 'x'))
        self.assertIn('--initiator ' + IQN, e.message)
