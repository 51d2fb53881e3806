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

"""What runs on the vault host for the compute hosts.

The one authority over leases, fencing, origin exports, seed streams out,
sync streams in and transfer slots (authority.py, landing.py, slots.py),
and the narrow door compute hosts reach it through (endpoint.py, run as the
forced command of each host's SSH key by ``zfs-vault-endpoint``).
"""
