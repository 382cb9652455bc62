"""MQTT transport: the client, the offline spool, Home Assistant discovery, commands.

Importing this package imports nothing heavy; ``agent.transport.mqtt`` is the only module that
imports paho."""
