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

"""The phases of a replica's life, one module each, joined by the engine.

:class:`~cinder_zfs_vault.compute_host.replica.ReplicaEngine` is the facade
the flows, the agent and the CLI call; each phase is a mixin over the
engine's parts. In the order of a disk's life: attach, seed, cutover, sync,
detach; recovery after a crash.
"""


def reporter(progress, expected):
    """transfer.pipe's progress(done) as progress(done, expected)."""
    if progress is None:
        return None
    return lambda done: progress(done, expected)
