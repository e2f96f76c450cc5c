"""The libvirt Windows VM guest: configuration, domain XML, VM lifecycle."""
