"""mptcplab: see and poke Multipath TCP (RFC 8684, RFC 6824) on a real Linux kernel."""

__version__ = "0.1.0"
