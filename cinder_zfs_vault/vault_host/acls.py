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

"""LIO's targets and ACLs, read with rtslib-fb on the vault host.

Cinder's ``lioadm`` helper adds and deletes targets and initiators' ACLs
through ``cinder-rtstool``, which cannot list them; a detach with no
connector needs the list to revoke the initiators no attachment uses, and
a detach of a local replica whether Cinder's export exists at all.
"""


def rtslib():
    """The rtslib-fb module (imported here: only vault hosts run LIO)."""
    import rtslib_fb
    return rtslib_fb


def target_exists(target_iqn):
    """Whether LIO has a target ``target_iqn`` now."""
    return any(t.wwn == target_iqn for t in rtslib().RTSRoot().targets)


def initiators(target_iqn):
    """IQNs of the initiators with an ACL on ``target_iqn``, sorted.

    :returns: [] when LIO has no such target.
    """
    for target in rtslib().RTSRoot().targets:
        if target.wwn == target_iqn:
            return sorted({acl.node_wwn for tpg in target.tpgs
                           for acl in tpg.node_acls})
    return []
