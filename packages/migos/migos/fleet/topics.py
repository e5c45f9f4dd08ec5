"""MQTT topic names (one place, pure).

    migos/FLEET/DEVICE/cmd      operator -> agent: signed command envelopes (QoS 1)
    migos/FLEET/DEVICE/status   agent -> operator: progress, results, refusals, log batches
    migos/FLEET/DEVICE/state    agent -> operator: last state, retained (``migos fleet list``)
    migos/FLEET/DEVICE/online   "1" retained while connected, "0" (last will) otherwise
"""

import re

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


def check_name(kind, value):
    """Fleet and device names may not contain MQTT wildcards or separators."""
    if not isinstance(value, str) or not _NAME.match(value):
        raise ValueError("%s name %r is not valid (letters, digits, . _ : -)" % (kind, value))
    return value


def topic(fleet, device, leaf):
    return "migos/%s/%s/%s" % (check_name("fleet", fleet), check_name("device", device), leaf)


def wildcard(fleet, leaf):
    return "migos/%s/+/%s" % (check_name("fleet", fleet), leaf)


def device_of(topic_name):
    parts = topic_name.split("/")
    return parts[2] if len(parts) == 4 and parts[0] == "migos" else None
