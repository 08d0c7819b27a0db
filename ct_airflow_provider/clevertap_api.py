"""Facts of CleverTap's read API that the hook, the export core and the simulator all rely on.

Plain constants, no imports: the hook speaks the API, the export core keeps its readers within the
limits, and neither has to import the other. Sources: CleverTap's API documentation (docs/clevertap.md).
"""

from __future__ import annotations

#: Regions of CleverTap's API hosts, ``https://{region}.api.clevertap.com``; none is Europe's
#: bare ``https://api.clevertap.com``.
REGIONS: tuple[str, ...] = ("in1", "sg1", "us1", "aps3", "mec1", "eu1")

#: The largest page the events and profiles exports accept.
MAX_BATCH_SIZE = 5000

#: CleverTap allows this many concurrent read requests per account; more answer 429.
MAX_CONCURRENT_REQUESTS = 3
