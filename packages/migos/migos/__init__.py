"""MIGOS: migrate a Raspberry Pi from Raspbian/Debian to balenaOS, in place.

Stage 1 (``migos.stage1``) runs on the device's old OS; stage 2 (``migos.stage2``)
runs inside the RAM-only MIGOS image. Both share the command line (``migos.cli``),
the JSON event log (``migos.log``), the config.json model (``migos.config``) and
the one place that runs external programs (``migos.run``).

Everything in this package is standard-library only and runs on Python >= 3.7.
"""

__version__ = "0.1.0"
