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

"""An in-memory stand-in for :class:`cinder_zfs_vault.zfs.ZFS` (vault side).

Datasets with properties and snapshots with GUIDs and holds, for the unit
tests of logic that reads back what it changed (leases, landing, the
vault's authority). The real command lines are tested in test_zfs.py and
in the lab.
"""

import itertools

from cinder_zfs_vault import exception


class FakeZFS(object):

    def __init__(self):
        self.props = {}
        self.snaps = {}
        self.calls = []
        self._guids = itertools.count(1000)

    def create(self, dataset, volsize=1 << 30, written=0):
        self.props[dataset] = {'volsize': str(volsize),
                               'written': str(written)}
        self.snaps[dataset] = []

    def _props_of(self, name):
        if name not in self.props:
            raise exception.NotFound('%s: dataset does not exist' % name)
        return self.props[name]

    def get(self, name, props):
        if '@' in name:
            ds, snap = name.split('@')
            for row in self.snaps.get(ds, ()):
                if row['snap'] == snap:
                    return {p: row.get(p, '-') for p in props}
            raise exception.NotFound('%s: dataset does not exist' % name)
        own = self._props_of(name)
        return {p: own.get(p, '-') for p in props}

    def get_local(self, names, props, depth=None):
        result = {}
        for name in names:
            result[name] = {p: v for p, v in self._props_of(name).items()
                            if p in props}
            if depth:
                for ds in self.props:
                    if ds.startswith(name + '/'):
                        result[ds] = {p: v for p, v in self.props[ds].items()
                                      if p in props}
        return result

    def set(self, name, properties):
        self.calls.append(('set', name, dict(properties)))
        self._props_of(name).update({k: str(v)
                                     for k, v in properties.items()})

    def inherit(self, name, prop):
        self.calls.append(('inherit', name, prop))
        self._props_of(name).pop(prop, None)

    def exists(self, name):
        try:
            self.get(name, ('type',))
        except exception.NotFound:
            return False
        return True

    def snapshots(self, dataset):
        self._props_of(dataset)
        return [dict(row) for row in self.snaps[dataset]]

    def snapshot(self, name):
        ds, snap = name.split('@')
        self.calls.append(('snapshot', name))
        self.snaps[ds].append({'name': name, 'snap': snap,
                               'guid': str(next(self._guids)),
                               'createtxg': len(self.snaps[ds]) + 1,
                               'clones': [], 'userrefs': 0})
        self.props[ds]['written'] = '0'
        self.props[ds]['written@' + snap] = '0'

    def _row(self, name):
        ds, snap = name.split('@')
        for row in self.snaps[ds]:
            if row['snap'] == snap:
                return row
        raise exception.NotFound('%s: dataset does not exist' % name)

    def hold(self, name, tag):
        self._row(name)['userrefs'] = 1

    def release(self, name, tag):
        self._row(name)['userrefs'] = 0

    def destroy(self, name):
        self.calls.append(('destroy', name))
        ds = name.split('@')[0]
        self.snaps[ds].remove(self._row(name))

    def rollback(self, name, recursive=False):
        self.calls.append(('rollback', name))
        ds = name.split('@')[0]
        rows = self.snaps[ds]
        self.snaps[ds] = rows[:rows.index(self._row(name)) + 1]

    def abort_receive(self, dataset):
        self.calls.append(('abort_receive', dataset))

    def dry_run(self, args):
        return self.dry_run_output

    def send_size(self, args):
        return 4096
