"""Test-only helpers: real AWS event shapes, the KPL encoder, an emulator on loopback."""
