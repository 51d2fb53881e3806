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

"""Load through Cinder's API: many volumes attached at once, as nova does.

A lab target of its own (issue 21, "Done when"), on compute-1 of a lab of
hosts, Cinder's services on the vault (as the ``cinder`` user) and the
agent here on its own message-bus account::

    ZFS_LAB_POOL_GB=40 tools/zfs-lab exec --hosts vault,compute-1 -- \\
        python -m tools.load_api --volumes 20

``--volumes`` volumes are created, then attached at once (attachment
create, update with this host's connector, complete: ``local``), each
device written with its own pattern; once every disk is cut over to its
local replica, all are detached at once (attachment delete). The vault's
``zfs send``/``recv`` processes are sampled the whole time. Checked: no
API call failed, every write is in the vault, and nothing is left: no
flow in the agent's logbook, no lease or grant, no iSCSI session, dm
device or compute zvol; at most ``sync_workers`` transfers at once.
Prints the times (to every device, to every cut-over, to every detach);
exits 1 when a check fails. (The compute pool holds a thick COW zvol per
attached disk until its cut-over: 20 disks of 1 GiB need ~22 GiB.)
"""

import argparse
import os
import sqlite3
import statistics
import sys
import time

from cinder_zfs_vault import lease as leaselib
from tools import bench_replica
from tools import lab_cinder
from tools import labkit

MiB = 1024 * 1024
#: Where each disk is written (bytes), beyond the base the vault has.
OFFSET = 4 * MiB
WRITTEN = MiB


class Failed(Exception):
    """A check of the load test failed."""


def prop(vault_lab, volume_id, name):
    return vault_lab.run('zfs', 'get', '-Hp', '-o', 'value', name,
                         'vault/volume-' + volume_id).strip()


class Load(object):

    def __init__(self, count, timeout):
        self.count = count
        self.timeout = timeout
        self.api = lab_cinder.client().block_storage
        self.vault_lab = labkit.vault_lab()
        self.engine = labkit.make_engine()  # to read states only
        self.errors = []
        self.attachments = {}

    def at_once(self, call, vols):
        """``call(vol)`` for every volume at once (bench_replica.at_once).

        A call that fails is counted in :attr:`errors` (the load's failed
        calls), not raised. :returns: the seconds of those that did, sorted.
        """
        by_id = {v.id: v for v in vols}
        failed = set()

        def counted(volume_id):
            try:
                call(by_id[volume_id])
            except Exception as e:
                failed.add(volume_id)
                self.errors.append('%s: %r' % (volume_id, e))
        done = bench_replica.at_once(counted, list(by_id),
                                     timeout=self.timeout)
        return sorted(t for i, t in done.items() if i not in failed)

    def wait_status(self, vol, status):
        return self.api.wait_for_status(self.api.get_volume(vol), status,
                                        failures=['error', 'error_deleting'],
                                        interval=2, wait=self.timeout)

    def create(self):
        if not self.api.find_type(lab_cinder.BACKEND):
            self.api.create_type(name=lab_cinder.BACKEND, extra_specs={
                'volume_backend_name': lab_cinder.BACKEND})
        # Cinder's default quota is 10 volumes a project: the operator's
        # word for the lab's (noauth) project.
        project = lab_cinder.NOAUTH_TOKEN.split(':')[1]
        self.api.put('/os-quota-sets/%s' % project, json={'quota_set': {
            'volumes': self.count + 10}}).raise_for_status()
        vols = [self.api.create_volume(size=1, name='load-%d' % i)
                for i in range(self.count)]
        return [self.wait_status(v, 'available') for v in vols]

    def attach(self, vol):
        """nova's attach; the device written. Records the attachment."""
        att = self.api.create_attachment(vol.id)
        self.attachments[vol.id] = att
        connector = labkit.connector_properties(host=labkit.HOST)
        att = self.api.update_attachment(att.id, connector=connector)
        self.api.complete_attachment(att.id)
        info = att.connection_info
        if info['driver_volume_type'] != 'local':
            raise Failed('%s attached over %s, not local'
                         % (vol.id, info['driver_volume_type']))
        labkit.write_at(info['device_path'], OFFSET,
                        labkit.pattern(vol.id, WRITTEN))

    def detach(self, vol):
        self.api.delete_attachment(self.attachments[vol.id].id,
                                   ignore_missing=False)
        self.wait_status(vol, 'available')

    def run(self):
        vault = labkit.vault()
        workers = vault.attributes.vault().sync_workers
        vols = self.create()
        print('%d volumes of 1 GiB; the vault\'s sync_workers: %d'
              % (len(vols), workers), flush=True)
        self.vault_lab.start_sampling()
        try:
            start = time.monotonic()
            attached = self.at_once(self.attach, vols)
            print('attached and written, at once: every device in %.1f s '
                  '(median %.1f s)' % (attached[-1] if attached else -1,
                                       median(attached)), flush=True)
            ids = {v.id for v in vols}

            def all_local():
                return all(self.engine.state(i) == 'local' for i in ids)
            wait_until(all_local, self.timeout, 'every cut-over')
            print('every disk cut over to its local replica %.1f s after '
                  'the attach began' % (time.monotonic() - start),
                  flush=True)
            detached = self.at_once(self.detach, vols)
            print('detached at once (final sync, GUID confirmed, replica '
                  'gone): every detach in %.1f s (median %.1f s)'
                  % (detached[-1] if detached else -1, median(detached)),
                  flush=True)
        finally:
            most = self.vault_lab.stop_sampling()
        print('transfers on the vault at once, sampled: at most %d' % most)
        self.check(vols, most, workers)
        for vol in vols:
            self.api.delete_volume(vol)

    def check(self, vols, most, workers):
        problems = list(self.errors)
        if most > workers:
            problems.append('%d transfers at once > sync_workers %d'
                            % (most, workers))
        for vol in vols:
            data = self.vault_lab.read_at(
                self.vault_lab.zvol('volume-' + vol.id), OFFSET, WRITTEN)
            if data != labkit.pattern(vol.id, WRITTEN):
                problems.append('%s: its write is not in the vault' % vol.id)
            for name in (leaselib.OWNER, leaselib.GRANTED):
                if prop(self.vault_lab, vol.id, name) != '-':
                    problems.append('%s: %s left' % (vol.id, name))
        logbook = os.path.join(labkit.AGENT_STATE, 'logbook.sqlite')
        with sqlite3.connect(logbook) as db:
            flows = db.execute('SELECT count(*) FROM logbooks').fetchone()[0]
        if flows:
            problems.append('%d flows left in the agent\'s logbook' % flows)
        left = labkit.leftovers()
        ids = [v.id for v in vols]
        for kind in ('sessions', 'dm', 'compute'):
            mine = [x for x in left[kind] if any(i in x for i in ids)]
            if mine:
                problems.append('%s left: %s' % (kind, mine))
        print('failed API calls: %d; orphan flows: %d' % (len(self.errors),
                                                          flows))
        if problems:
            raise Failed('; '.join(problems))
        print('every write in the vault; no lease, grant, flow, session, '
              'dm device or compute zvol left')


def median(values):
    return statistics.median(values) if values else -1


def wait_until(check, timeout, what):
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise Failed('%s: not in %d s' % (what, timeout))
        time.sleep(5)


def main(argv=None):
    parser = argparse.ArgumentParser(prog='load_api')
    parser.add_argument('--volumes', type=int, default=20)
    parser.add_argument('--timeout', type=int, default=3600,
                        help='seconds for each phase')
    args = parser.parse_args(argv)
    if not labkit.REMOTE_VAULT:
        sys.exit('load_api runs on compute-1 of a lab of hosts')
    labkit.setup(cinder=False)
    vault_lab = labkit.vault_lab()
    vault_lab.ensure_cinder()
    agent = labkit.start_agent(lab_cinder.agent_transport_url())
    try:
        Load(args.volumes, args.timeout).run()
    except Failed as e:
        print('FAILED: %s' % e)
        print(labkit.agent_log(60))
        return 1
    finally:
        labkit.stop_agent(agent)
    return 0


if __name__ == '__main__':
    sys.exit(main())
