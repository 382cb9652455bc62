"""Where signed messages go: pluggable outputs behind one small interface.

The service signs each payload once; every output receives the same bytes, so the bytes signed
are the bytes sent. Outputs: JSON lines (stdout or a file) here, MQTT in ``agent.transport``.
"""
