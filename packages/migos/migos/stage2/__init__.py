"""Stage 2: what runs inside the RAM-only MIGOS (the mig2balena state machine: migrate)."""
