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

"""What the ``zfs-vault`` commands share to show things.

Sizes (:func:`human_bytes`) and times (:func:`timestamp`) as users read
them, text from outside made safe for a terminal (:func:`printable`), the
columns of the attributes that ``show`` and ``vault show`` print
(:func:`attribute_values`), and the progress bar of a seed or sync
on a terminal (:class:`ProgressBar`), as osc-lib's ``format_columns`` and
python-openstackclient's ``common/progressbar.py`` are shared by its
commands.
"""

import datetime
import time


def printable(value):
    """``value``, or ``ascii(value)`` if it is a str not all printable ASCII.

    What a listing or an error line shows may come from outside this
    process: a lease owner or a synced GUID is a ZFS property anyone with
    ``zfs set`` can write, an argument is whatever was typed. Shown raw, a
    newline would forge a row or a second error line, an escape sequence
    would drive the operator's terminal (``\\x1b[2J`` clears it) and a
    look-alike letter (a Cyrillic a) would pass for a host name. Quoted
    and escaped, the value is one line and visibly not what it looks
    like. Anything that is not a str (numbers, None, lists) is returned
    as it is.
    """
    if isinstance(value, str) and not all(' ' <= c <= '~' for c in value):
        return ascii(value)
    return value


def human_bytes(n):
    """``1536`` -> ``'1.5 KiB'`` (binary units, as zfs prints sizes)."""
    for unit in ('B', 'KiB', 'MiB', 'GiB', 'TiB'):
        if abs(n) < 1024 or unit == 'TiB':
            return ('%d %s' if unit == 'B' else '%.1f %s') % (n, unit)
        n /= 1024.0


def timestamp(seconds):
    """Epoch seconds as ISO 8601 UTC (``2024-05-01T12:00:00Z``), or None."""
    if seconds is None:
        return None
    return datetime.datetime.fromtimestamp(
        seconds, datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')


#: Columns of the attributes in ``show`` and ``vault show`` (units: seconds,
#: bytes/second with 0 unlimited, an ISO 8601 time or None for "due now").
ATTRIBUTE_COLUMNS = {'frequency': 'Frequency (s)', 'next_sync': 'Next sync',
                     'upload_rate': 'Upload rate (B/s)',
                     'download_rate': 'Download rate (B/s)',
                     'sync_mode': 'Sync mode', 'sync_workers': 'Sync workers'}


def attribute_values(values, explicit):
    """Columns and values of attributes, and the names set explicitly."""
    columns, row = [], []
    for name, value in values._asdict().items():
        columns.append(ATTRIBUTE_COLUMNS[name])
        row.append(timestamp(value) if name == 'next_sync' else value)
    columns.append('Set here')
    row.append(sorted(explicit))
    return tuple(columns), row


class ProgressBar(object):
    """``label  45% [#########-----------]  450 MiB/1.0 GiB  12 MiB/s``.

    Called as ``bar(bytes_done, bytes_expected)``; redrawn at most every
    ``interval`` seconds on one line of ``stream``. ``bytes_expected`` 0
    (a resumed stream, whose size is unknown) shows bytes and rate only.
    """

    WIDTH = 30

    def __init__(self, stream, label, interval=0.2, clock=time.monotonic):
        self.stream = stream
        self.label = label
        self.interval = interval
        self.clock = clock
        self.start = clock()
        self.drawn_at = None
        self.latest = None  # (done, expected, seconds) last reported
        self.shown = None  # ... and last drawn
        self.width = 0

    def __call__(self, done, expected):
        now = self.clock()
        self.latest = (done, expected, now - self.start)
        if self.drawn_at is None or now - self.drawn_at >= self.interval:
            self.drawn_at = now
            self._draw()

    def _draw(self):
        text = self.line(*self.latest)
        # Pad over what a longer previous line left on the terminal.
        self.stream.write('\r' + text.ljust(self.width))
        self.stream.flush()
        self.width = len(text)
        self.shown = self.latest

    def line(self, done, expected, seconds):
        rate = '%s/s' % human_bytes(done / seconds if seconds > 0 else 0)
        if not expected:
            return '%s  %s  %s' % (self.label, human_bytes(done), rate)
        fraction = min(1.0, float(done) / expected)
        filled = int(fraction * self.WIDTH)
        return '%s %3d%% [%s%s]  %s/%s  %s' % (
            self.label, fraction * 100, '#' * filled,
            '-' * (self.WIDTH - filled), human_bytes(done),
            human_bytes(expected), rate)

    def finish(self):
        """Draw the last values reported, and end the line."""
        if self.latest is None:
            return
        if self.shown != self.latest:
            self._draw()
        self.stream.write('\n')
        self.stream.flush()


def with_progress(app, label, call, *args):
    """``call(*args, progress=bar)`` with ``app``'s bar, ended after."""
    bar = app.progress(label)
    try:
        return call(*args, progress=bar)
    finally:
        if bar is not None:
            bar.finish()
