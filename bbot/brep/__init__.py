"""brep's HTTP interface for agents, on both sides (``shared/docs/bbot-protocol.md`` §3).

- ``protocol``: URL dispatch, URL parameters, size limits, result URLs (no I/O);
- ``keys``: agent keys, fingerprints and challenges (§3.5); ``keys_cli``: ``bbot agent-key``;
- ``client``: what an agent (or a lower controller) sends to a controller.

The controller's side is ``bbot.controller.shim`` (with its Flask views in
``bbot.controller.web.agents`` and ``web.brep``); the polling agent is
``bbot.agent.poller``; controllers in layers are ``bbot.controller.upstream``.
"""
