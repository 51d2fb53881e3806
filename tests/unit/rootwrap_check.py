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

"""The driver's rootwrap filters, read and matched by oslo.rootwrap itself."""

import os
import tempfile

from oslo_rootwrap import wrapper

FILTERS = os.path.join(os.path.dirname(__file__), '..', '..', 'etc',
                       'cinder-zfs-vault', 'rootwrap.d')


def filters():
    return wrapper.load_filters([os.path.abspath(FILTERS)])


def matcher(text):
    """allowed() for a filters file's ``text`` instead of ours."""
    with tempfile.TemporaryDirectory() as directory:
        with open(os.path.join(directory, 'f.filters'), 'w') as f:
            f.write(text)
        loaded = wrapper.load_filters([directory])
    return lambda argv: any(f.match([str(a) for a in argv]) for f in loaded)


def allowed(argv, _cache=[]):
    """True if cinder-rootwrap would run ``argv`` with our filters."""
    if not _cache:
        _cache.append(filters())
    argv = [str(a) for a in argv]
    return any(f.match(argv) for f in _cache[0])


def check(argv):
    """For RecordingExecutor.check: every zfs command must be allowed."""
    if argv and argv[0] in ('zfs', 'zpool') and not allowed(argv):
        raise AssertionError('rootwrap refuses %s' % ' '.join(argv))
