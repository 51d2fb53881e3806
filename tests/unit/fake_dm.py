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

"""A device-mapper that keeps its devices in a dict, for engine decisions.

The interface of :class:`cinder_zfs_vault.compute_host.dm.DeviceMapper`;
every change is appended to a journal (shared with a fake ZFS if given), so
a test can check what happened in which order. A merge is done at once.
"""

import itertools


class FakeDM(object):

    def __init__(self, journal=None):
        self.devices_ = {}  # name -> {'table', 'devno', 'suspended'}
        self.journal = [] if journal is None else journal
        self._minor = itertools.count(0)

    def reboot(self):
        """A power cut: every device gone."""
        self.devices_.clear()

    def exists(self, name):
        return name in self.devices_

    def table(self, name):
        return self.devices_[name]['table']

    def create(self, name, table, udev=True):
        assert name not in self.devices_, name
        self.journal.append(('dm create', name, table))
        self.devices_[name] = {'table': table, 'suspended': False,
                               'devno': '253:%d' % next(self._minor)}

    def devno(self, name):
        return self.devices_[name]['devno']

    def deps(self, name):
        """dm names of the dm devices it maps; zd0 for a zvol, sdz else."""
        by_devno = {d['devno']: n for n, d in self.devices_.items()}
        found = []
        for field in self.table(name).split()[3:]:
            if field in by_devno:
                found.append(by_devno[field])
            elif field.startswith('/dev/zvol/'):
                found.append('zd0')
            elif field.startswith('/dev/'):
                found.append('sdz')
        return found

    def suspend(self, name):
        self.devices_[name]['suspended'] = True

    def resume(self, name):
        self.devices_[name]['suspended'] = False

    def reload(self, name, table):
        self.journal.append(('dm reload', name, table))
        self.devices_[name]['table'] = table

    def swap(self, name, table):
        self.reload(name, table)
        return 0.0

    def suspended(self, name):
        return self.devices_[name]['suspended']

    def in_use(self, name, grace=10.0, interval=0.2):
        return False

    def remove(self, name):
        if self.devices_.pop(name, None):
            self.journal.append(('dm remove', name))

    def wait_merged(self, name, timeout, interval=0.2):
        self.journal.append(('dm merged', name))
