"""Pure-Python dependencies vendored next to the ``migos`` package on the device.

Only paho-mqtt (``migos agent``'s MQTT client): its package files and licence are taken
from the build venv (pinned in requirements.txt) and added as top-level ``paho/`` to
migos.pyz (dist) and to the image's dist-packages (overlay). Nothing third-party is
committed to this repository.
"""

import glob
import os


def _paho_root():
    try:
        import paho.mqtt.client  # noqa: F401
        import paho
    except ImportError:
        return None
    return os.path.dirname(os.path.abspath(paho.__path__[0]))


def files():
    """[(absolute source path, path relative to the Python path)], sorted; [] if not installed."""
    site = _paho_root()
    if site is None:
        return []
    out = []
    for d, dirs, names in os.walk(os.path.join(site, "paho")):
        dirs[:] = sorted(x for x in dirs if x != "__pycache__")
        for n in sorted(names):
            if n.endswith(".py"):
                full = os.path.join(d, n)
                out.append((full, os.path.relpath(full, site)))
    for lic in sorted(glob.glob(os.path.join(site, "paho_mqtt-*.dist-info", "licenses", "*")) +
                      glob.glob(os.path.join(site, "paho_mqtt-*.dist-info", "LICENSE*"))):
        if os.path.isfile(lic):
            out.append((lic, "paho/" + os.path.basename(lic)))
    return sorted(out, key=lambda x: x[1])
