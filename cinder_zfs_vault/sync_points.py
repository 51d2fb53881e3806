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

"""Sync points: the snapshots both sides of a replica share.

The replica engine names its snapshots ``zv-<n>-<uuid8>`` (DESIGN.md,
"Names"): ``n`` grows by one per sync point, the random suffix keeps two
hosts (or a retry) from ever making two different snapshots of one name.
Holds tagged :data:`HOLD_TAG` (``zfs-hold(8)``) pin the newest sync point on
each side, the base of the next incremental send. Pure functions of
``zfs.snapshots()`` rows; both the vault and the compute hosts use them.
"""

import re
import uuid

# ASCII digits: '\d' would take any Unicode digit, which int() reads.
_RE = re.compile(r'zv-([0-9]{1,18})-[0-9a-f]{8}')
HOLD_TAG = 'zfsvault-base'


def is_sync_point(snap):
    """True if ``snap`` (the part after '@') names a sync point."""
    return isinstance(snap, str) and bool(_RE.fullmatch(snap))


def of(snaps):
    """The sync points among ``zfs.snapshots()`` rows, oldest first."""
    return [s for s in snaps if is_sync_point(s['snap'])]


def next_name(snaps):
    """The name of the next sync point after those in ``snaps``."""
    numbers = [int(_RE.fullmatch(s['snap']).group(1)) for s in of(snaps)]
    return 'zv-%d-%s' % (max(numbers, default=0) + 1, uuid.uuid4().hex[:8])


def newest_common(local_snaps, vault_snaps):
    """The newest local snapshot the vault has too (same GUID), or None."""
    vault_guids = {s['guid'] for s in vault_snaps}
    common = [s for s in local_snaps if s['guid'] in vault_guids]
    return common[-1] if common else None
