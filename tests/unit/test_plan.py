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

"""The transfer planner, from snapshot lists alone (zrepl's diff tests)."""

import testtools

from cinder_zfs_vault import plan


def snaps(*spec):
    """Rows from 'name:guid' strings, oldest first."""
    rows = []
    for txg, item in enumerate(spec, 1):
        name, guid = item.split(':')
        rows.append({'name': 'pool/v@' + name, 'snap': name, 'guid': guid,
                     'createtxg': txg})
    return rows


class StepTest(testtools.TestCase):

    def test_resume_first(self):
        self.assertEqual(plan.Resume('1-ab-cd'), plan.step(
            snaps('zv-1:1'), snaps('zv-1:1'), snaps('zv-1:1')[0],
            resume_token='1-ab-cd'))

    def test_empty_receiver_gets_the_whole_target(self):
        sender = snaps('zv-1:1')
        self.assertEqual(plan.Full(sender[-1]),
                         plan.step(sender, [], sender[-1]))

    def test_incremental_from_the_newest_common_by_guid(self):
        sender = snaps('zv-1:1', 'zv-2:2', 'zv-3:3')
        # The receiver has zv-1 and zv-2 (zv-2 under another name: GUIDs
        # decide).
        receiver = snaps('zv-1:1', 'renamed:2')
        step = plan.step(sender, receiver, sender[-1])
        self.assertEqual(plan.Incremental(sender[1], sender[2]), step)

    def test_up_to_date(self):
        sender = snaps('zv-1:1', 'zv-2:2')
        self.assertEqual(plan.UpToDate(sender[-1]),
                         plan.step(sender, snaps('zv-1:1', 'zv-2:2'),
                                   sender[-1]))

    def test_receiver_only_snapshots_diverge(self):
        sender = snaps('zv-1:1', 'zv-2:2')
        receiver = snaps('zv-1:1', 'snapshot-x:9')
        step = plan.step(sender, receiver, sender[-1])
        self.assertEqual(plan.Diverged(sender_only=['zv-2'],
                                       receiver_only=['snapshot-x']),
                         step)
        self.assertIn('pool/vault has snapshots pool/local has not: '
                      'snapshot-x', plan.explain(step, 'pool/local',
                                                 'pool/vault'))

    def test_nothing_in_common_diverges(self):
        sender = snaps('zv-1:1')
        step = plan.step(sender, snaps('zv-1:7'), sender[-1])
        self.assertEqual(plan.Diverged(['zv-1'], ['zv-1']), step)
