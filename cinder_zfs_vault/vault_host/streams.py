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

"""What the vault receives from a compute host: data, never properties.

A host's syncs are ``zfs send -L -c -i``/``-I`` streams, or their resumed
rest (``send -t``). A stream made with ``-p``, ``-R`` or ``-h`` carries the
sender's properties (and holds) in the nvlist of its first record, and
``zfs receive`` sets them on the vault's zvol: a compromised host could
set this project's own properties (the lease's owner, generation, synced
GUID, sync mode) by sending them (issue 21, 1): a received value sits
under a local one, but takes effect wherever the vault has none.
``zfs receive -x`` does not help: in the lab (ZFS 2.1.11) ``-x
org.x:owner`` dropped the local value and left the stream's as
``received``. So the vault reads the stream's first record before ``zfs
receive`` starts and refuses one that carries that nvlist.

The record is ``dmu_replay_record_t`` (OpenZFS ``include/sys/zfs_ioctl.h``,
312 bytes): ``drr_type`` (uint32, ``DRR_BEGIN`` = 0), ``drr_payloadlen``
(uint32), then ``drr_begin``: ``drr_magic`` (uint64,
``DMU_BACKUP_MAGIC``), ``drr_versioninfo`` (uint64, the header type in its
low 2 bits: 1 a substream, 2 a compound stream), ... in the sender's byte
order. ``libzfs_sendrecv.c`` (``send_prelim_records``) writes the packed
nvlist (``fss``: properties, snapshot properties, holds) as the payload of
a compound stream's first record only when it gathers properties
(``-R``, ``-p``, ``-h``); ``-I`` alone makes a compound stream with no
payload. A substream's first record may carry a payload too, written by
the kernel (``dmu_send.c``): where a resumed send starts (``send -t``:
``resume_object``, ``resume_offset``; found in the lab when the first
version of this check refused a resumed sync), a raw send's key
parameters, a redacted send's list. ``zfs receive`` reads no property
from it, so a substream's payload is let through.
"""

import struct

from cinder_zfs_vault import exception

#: Bytes of the first record (sizeof(dmu_replay_record_t)).
BEGIN_SIZE = 312
DRR_BEGIN = 0
DMU_BACKUP_MAGIC = 0x2F5BACBAC
SUBSTREAM = 1
COMPOUNDSTREAM = 2


class Refused(exception.InvalidInput):
    """A stream the vault does not receive (nothing was received)."""


def check_begin(record):
    """Refuse a stream whose first record is not a plain DRR_BEGIN.

    :param record: the stream's first :data:`BEGIN_SIZE` bytes (fewer: the
        stream ended before).
    :returns: the stream's header type (:data:`SUBSTREAM` or
        :data:`COMPOUNDSTREAM`).
    :raises Refused: not a ZFS send stream, or one that carries properties,
        snapshot properties or holds (a payload in the first record of a
        compound stream).
    """
    if len(record) < BEGIN_SIZE:
        raise Refused('not a ZFS send stream: it ended after %d bytes'
                      % len(record))
    for order in '<>':
        drr_type, payload, magic, versioninfo = struct.unpack_from(
            order + 'IIQQ', record)
        if magic == DMU_BACKUP_MAGIC:
            break
    else:
        raise Refused('not a ZFS send stream: no DRR_BEGIN magic')
    header = versioninfo & 0x3
    if drr_type != DRR_BEGIN or header not in (SUBSTREAM, COMPOUNDSTREAM):
        raise Refused('not a ZFS send stream: record type %d, header type '
                      '%d' % (drr_type, header))
    if header == COMPOUNDSTREAM and payload:
        raise Refused('a stream carrying properties or holds (zfs send -p, '
                      '-R or -h; %d bytes of nvlist) is refused: the '
                      'vault\'s properties are its own' % payload)
    return header
