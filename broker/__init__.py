"""RabbitMQ-specific tooling (topology provisioning with pika).

The runtime declares what it uses through kombu (``bbot.bus``), from the
names in ``bbot.bus.names``; this package is where provisioning, verification
and definitions export for a RabbitMQ cluster live.
"""
