"""Teach Scapy's TCP options field about kind 30 (MPTCP), without editing Scapy.

Scapy keeps TCP options as ``(name, value)`` tuples and decodes them in ``TCPOptionsField``, with
no registry to plug a decoder into (Scapy issue #3333). ``install()`` makes three small changes,
in the form they would take upstream:

* ``TCPOptions`` learns the name ``"MPTCP"`` for kind 30;
* dissection turns each kind-30 value into the layer of its subtype (``MPTCPOption``), built from
  the option's own bytes, length byte included, so a truncated or misshapen option is kept as an
  ``MPMalformed`` with what was on the wire;
* building accepts ``("MPTCP", layer)`` and writes the layer's bytes as they are (a crafted
  length byte is kept); ``("MPTCP", bytes)`` keeps working as a raw value, and bytes that are
  a whole option already (``1e 0c ...``, length byte equal to their length) are written once,
  not wrapped in a second kind and length. Options that outgrow the 40 bytes a TCP header
  holds draw a warning, as Scapy warns.

Every other option goes through Scapy's own code, untouched. Calling ``install()`` again does
nothing.
"""

from __future__ import annotations

from typing import Any

from scapy.error import log_runtime
from scapy.layers import inet
from scapy.packet import Packet

from mptcplab.layers.options import MPTCP_KIND, MPTCPOption
from mptcplab.wire import option_spans

OPTION_NAME = "MPTCP"
_MARK = "_mptcplab_mptcp_hook"


MAX_OPTIONS = 40     # a TCP header's data offset (4 bits of words) leaves room for 40 bytes
_warned: dict[str, Any] = {}


def _is_layer(value: Any) -> bool:
    return isinstance(value, Packet)


def _is_whole_option(value: Any) -> bool:
    """Bytes that are a whole kind-30 option already (kind, then a length byte equal to their
    own length): written as they are, not wrapped in a second kind and length."""
    return (isinstance(value, (bytes, bytearray)) and len(value) >= 3
            and value[0] == MPTCP_KIND and value[1] == len(value))


def _ours(name: Any, value: Any) -> bool:
    return name in (OPTION_NAME, MPTCP_KIND) and (_is_layer(value) or _is_whole_option(value))


def _unpadded(one: bytes) -> bytes:
    """Scapy's ``i2m`` output for a single option, without the padding it appends."""
    if not one:
        return one
    if one[0] in (0, 1):
        return one[:1]
    return one[:one[1]]


def install() -> None:
    """Plug the MPTCP layers into ``scapy.layers.inet.TCPOptionsField``; idempotent."""
    field_cls = inet.TCPOptionsField
    if getattr(field_cls, _MARK, False):
        return
    inet.TCPOptions[0][MPTCP_KIND] = (OPTION_NAME, None)
    inet.TCPOptions[1][OPTION_NAME] = MPTCP_KIND

    scapy_m2i = field_cls.m2i
    scapy_i2m = field_cls.i2m
    scapy_i2repr = field_cls.i2repr

    def m2i(self: Any, pkt: Packet | None, x: bytes) -> list[tuple[Any, Any]]:
        opts = scapy_m2i(self, pkt, x)
        if not any(name == OPTION_NAME for name, _ in opts):
            return opts
        spans = option_spans(bytes(x))
        if len(spans) != len(opts):  # Scapy walked differently: rebuild from the values
            spans = [bytes([MPTCP_KIND, len(v) + 2]) + v if n == OPTION_NAME else b""
                     for n, v in opts]
        return [(name, MPTCPOption(span) if name == OPTION_NAME else value)
                for (name, value), span in zip(opts, spans)]

    def i2m(self: Any, pkt: Packet | None, x: Any) -> bytes:
        if not x or isinstance(x, (bytes, str)) or not any(
                name in (OPTION_NAME, MPTCP_KIND) for name, _ in x):
            return scapy_i2m(self, pkt, x)
        out = b""
        for name, value in x:
            if _ours(name, value):
                out += bytes(value)
            else:
                out += _unpadded(scapy_i2m(self, pkt, [(name, value)]))
        out += b"\x00" * (-len(out) % 4)
        if len(out) > MAX_OPTIONS and _warned.get("last") is not x:
            _warned["last"] = x     # Scapy encodes a header twice (length, then bytes)
            log_runtime.warning(
                "TCP options with MPTCP take %d bytes, more than the %d a TCP header can hold: "
                "the data offset cannot count them, and a receiver (Scapy included) will "
                "not find the options", len(out), MAX_OPTIONS)
        return out

    def i2repr(self: Any, pkt: Packet | None, x: Any) -> Any:
        if isinstance(x, list) and any(isinstance(v, MPTCPOption) for _, v in x):
            x = [(n, v.summary() if isinstance(v, MPTCPOption) else v) for n, v in x]
        return scapy_i2repr(self, pkt, x)

    field_cls.m2i = m2i
    field_cls.i2m = i2m
    field_cls.i2repr = i2repr
    setattr(field_cls, _MARK, True)


def mptcp_options(tcp: Packet) -> list[MPTCPOption]:
    """The MPTCP option layers of a TCP header, in wire order."""
    return [value for name, value in (tcp.options or []) if name == OPTION_NAME
            and isinstance(value, MPTCPOption)]
