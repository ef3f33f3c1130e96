"""A host of the test's own on this machine: a Linux network namespace joined to the machine by a veth pair, for
network partitions (iproute2's `ip`; needs root, as the CI runs). The machine's side of the link is one address,
the namespace's the other; cutting the link (the machine's end down) is a silent partition: nothing is refused,
packets are lost, as on a real network that fails."""

import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def can_make_namespaces() -> str | None:
    """None when this process may make network namespaces; else why not."""
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root"
    return None


@dataclass(frozen=True)
class Namespace:
    name: str
    #: The machine's end of the link, and the namespace's.
    host_address: str
    inside_address: str
    host_link: str

    @property
    def exec_prefix(self) -> list[str]:
        """Put before a command to run it inside the namespace."""
        return ["ip", "netns", "exec", self.name]

    def cut(self) -> None:
        """Partition: the link goes down at the machine's end (the namespace's end stays up, without carrier)."""
        _ip("link", "set", self.host_link, "down")

    def heal(self) -> None:
        _ip("link", "set", self.host_link, "up")


@contextmanager
def network_namespace(subnet: int) -> Iterator[Namespace]:
    """A namespace at 10.213.`subnet`.2, joined to this machine's 10.213.`subnet`.1; deleted (with its processes'
    network) on exit."""
    tag = secrets.token_hex(3)
    name, host_link, inside_link = f"ap-{tag}", f"aph-{tag}", f"apn-{tag}"
    host_address, inside_address = f"10.213.{subnet}.1", f"10.213.{subnet}.2"
    _ip("netns", "add", name)
    try:
        _ip("link", "add", host_link, "type", "veth", "peer", "name", inside_link)
        _ip("link", "set", inside_link, "netns", name)
        _ip("addr", "add", f"{host_address}/30", "dev", host_link)
        _ip("link", "set", host_link, "up")
        for args in (("addr", "add", f"{inside_address}/30", "dev", inside_link), ("link", "set", inside_link, "up"),
                     ("link", "set", "lo", "up")):
            _ip("netns", "exec", name, "ip", *args)
        yield Namespace(name, host_address, inside_address, host_link)
    finally:
        subprocess.run(["ip", "link", "del", host_link], capture_output=True, timeout=10)
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)
