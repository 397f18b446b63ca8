"""chainlab: reproduce and prove iptables chain traversal on Docker/Calico hosts."""

__version__ = "0.1.0"
