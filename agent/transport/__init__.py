"""MQTT transport: the client, the offline spool, Home Assistant discovery, commands.

Importing this package imports nothing heavy; paho comes with ``agent.transport.mqtt`` and the
link's modules it wires (``link``, ``sender``, ``client_setup``, ``link_status``,
``protocol_fallback``); paho's client module always through ``agent.mqtt_client``."""
