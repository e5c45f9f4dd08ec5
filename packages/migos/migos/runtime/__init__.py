"""The MIGOS runtime: what /init hands over to inside the RAM-only MIGOS.

    bootdisk   find the disk whose first FAT partition holds migos/migrate.json and read
               what `migos init` left there (no mount: stage 2's FAT reader)
    network    bring the network up: the backed-up wired config, else DHCP on the first
               wired interface
    watchdog   the hardware watchdog, fed only while the migration makes progress
    plan       pure decisions: migrate's command line, what an exit code means, backoff
    main       the loop: migrate, then reboot into balenaOS; before the point of no return
               a failure that cannot be retried runs restore-boot and reboots into the old
               OS; after it, retry forever with backoff. When `migos init` carried the
               fleet agent (migos/agent/), it runs in the background (status only) and
               ships every event to MQTT; its key is erased from the FAT on SUCCESS

Run as ``python3 -m migos.runtime`` (by /usr/lib/migos/runtime).
"""
