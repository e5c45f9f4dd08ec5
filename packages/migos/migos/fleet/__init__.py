"""Fleet operation: remote commands over MQTT, remote log shipping, the operator's CLI.

Device side (standard library + the vendored pure-Python paho-mqtt, Python >= 3.7):
``signing`` (command envelopes, HMAC-SHA256, nonce store), ``agent`` (``migos agent``),
``logship`` (JSON events to MQTT/HTTP through a bounded on-disk queue), ``mqtt`` (the
thin paho wrapper both sides use), ``topics``. Operator side: ``operator`` (``migos
fleet``) and ``rollout`` (the pure rollout planner).
"""
