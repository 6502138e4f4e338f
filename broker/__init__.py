"""RabbitMQ-specific tooling (topology provisioning with pika).

The runtime declares what it uses through kombu (``bbot.bus``), from the
names in ``bbot.bus.names``; this package is where provisioning, verification
and definitions export for a RabbitMQ cluster live.
"""

# bbot.bus builds its queues from broker.topology, which reads bbot.bus.names: importing
# bbot.bus first lets either package be imported first without a half-initialised module.
import bbot.bus  # noqa: F401
