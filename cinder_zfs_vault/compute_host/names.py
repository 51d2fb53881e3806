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

"""The names of one volume's replica: datasets and devices, validated once.

See replica.py for what each one is.
"""

from cinder_zfs_vault.compute_host import dm as dmlib
from cinder_zfs_vault import validation


class Names(object):
    """Every name of one volume's replica, validated once."""

    def __init__(self, volume_id, vault_root, compute_root):
        self.volume_id = validation.volume_id(volume_id)
        self.name = 'volume-' + self.volume_id
        self.vault = validation.volume_dataset(vault_root, self.volume_id)
        self.local = '%s/%s' % (validation.dataset(compute_root), self.name)
        self.cow = self.local + '-cow'
        self.dm = 'zvault-' + self.volume_id
        self.dm_snap = self.dm + '-snap'
        self.dm_merge = self.dm + '-merge'

    @property
    def device(self):
        return dmlib.DeviceMapper.path(self.dm)

    @staticmethod
    def zvol(dataset):
        return '/dev/zvol/' + dataset
