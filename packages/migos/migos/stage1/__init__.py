"""Stage 1: what runs on the device's old OS (diagnostic, backup, init, takeover, restore-boot)."""
