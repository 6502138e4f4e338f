"""brep's HTTP interface for agents, on both sides (``shared/docs/bbot-protocol.md`` §3).

- ``protocol``: URL dispatch, URL parameters, size limits, result URLs (no I/O);
- ``keys``: agent keys, fingerprints and challenges (§3.5);
- ``client``: what an agent (or a lower controller) sends to a controller.
"""
