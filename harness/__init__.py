"""kcb-harness: integration tests of Windows kernel drivers (callback objects) on a Wine or libvirt guest."""

__version__ = "0.1.0"
