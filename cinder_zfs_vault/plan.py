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

"""Which stream brings a receiver up to a sender's snapshot: a pure function.

zrepl's planner (``replication/logic/diff``): both sides' snapshot lists in,
one step out, before any byte moves. Snapshots are matched by GUID, never
by name (a name can be reused; a GUID is the snapshot, ``zfsprops(7)``).
Rows are ``zfs.snapshots()`` dicts, oldest first, with ``snap``, ``guid``
and ``createtxg``; on the sending side also ``name`` (``ds@snap``).

:func:`step` answers one of:

* :class:`Resume`: the receiver holds a cut stream's token: finish it first;
* :class:`Full`: the receiver has nothing: send the target whole (a seed);
* :class:`Incremental`: ``zfs send -I base target`` (every sync point
  between, so both sides keep the same restore points);
* :class:`UpToDate`: the receiver has the target already;
* :class:`Diverged`: the receiver has snapshots after the newest common
  one, or they share none. A receive would have to roll it back; we never
  do that silently (no ``zfs recv -F``), so nothing is sent and a human
  settles it.

Blocks written on the receiver after its newest snapshot are not the
plan's to judge but the receive's: ``zfs recv`` refuses an incremental
stream into a zvol "modified since most recent snapshot" (zfs-receive(8);
the errors map it to ``Diverged``) before a block lands. Its test compares
the zvol's data (``dsl_dataset_modified_since_snap``); ``written`` does
not: every import of a pool rewrites each zvol's objset block, and
``written`` reads 8192 bytes after a reboot that changed no data
(measured, OpenZFS 2.1.11). A plan refusing on ``written`` refused the
first sync after every reboot of the vault.
"""

import collections

Resume = collections.namedtuple('Resume', 'token')
Full = collections.namedtuple('Full', 'target')
Incremental = collections.namedtuple('Incremental', 'base target')
UpToDate = collections.namedtuple('UpToDate', 'target')
#: ``sender_only`` and ``receiver_only``: snapshot names after the newest
#: common one (or all of them when none is common).
Diverged = collections.namedtuple('Diverged', 'sender_only receiver_only')


def _after(rows, guid):
    """The rows newer than the one with ``guid`` (all when None)."""
    if guid is None:
        return list(rows)
    guids = [r['guid'] for r in rows]
    return list(rows[guids.index(guid) + 1:])


def step(sender, receiver, target, resume_token=None):
    """The one step that brings ``receiver`` to ``target``.

    :param sender: the sending side's snapshots, oldest first.
    :param receiver: the receiving side's snapshots, oldest first.
    :param target: the sender's row to reach (usually its newest).
    :param resume_token: the receiver's ``receive_resume_token``, if any.
    :returns: Resume, Full, Incremental, UpToDate or Diverged.
    """
    if resume_token:
        return Resume(resume_token)
    sender_guids = {r['guid'] for r in sender}
    common = [r for r in receiver if r['guid'] in sender_guids]
    if not receiver:
        return Full(target)
    base_guid = common[-1]['guid'] if common else None
    receiver_only = [r['snap'] for r in _after(receiver, base_guid)]
    if base_guid is None or receiver_only:
        return Diverged(
            sender_only=[r['snap'] for r in _after(sender, base_guid)
                         if r['guid'] not in
                         {x['guid'] for x in receiver}],
            receiver_only=receiver_only)
    if base_guid == target['guid']:
        return UpToDate(target)
    base = [r for r in sender if r['guid'] == base_guid][-1]
    return Incremental(base, target)


def explain(diverged, sender_name, receiver_name):
    """One line for a :class:`Diverged` answer (an operator reads it)."""
    if diverged.receiver_only:
        return '%s has snapshots %s has not: %s' % (
            receiver_name, sender_name, ', '.join(diverged.receiver_only))
    return '%s and %s share no snapshot' % (sender_name, receiver_name)
