"""facts.reserved_bits: finds an option sent with a reserved bit set, and only that one."""

from __future__ import annotations

from mptcplab.capture import LINKTYPE_RAW, PcapWriter
from mptcplab.facts import reserved_bits
from mptcplab.layers import MPDSS, MPCapable, MPPrio, MPTcpRst
from mptcplab.peer import build_segment


def _write(path, options: list[bytes]) -> None:
    w = PcapWriter(path)
    for i, opt in enumerate(options):
        seg = build_segment("10.0.0.1", "10.0.0.2", 40000, 5000, 1000 + i, 1, 0x10, opt)
        w.write(1.0 + i, LINKTYPE_RAW, seg, len(seg))
    w.close()


def test_clean_options_report_nothing(tmp_path) -> None:
    path = tmp_path / "clean.pcap"
    _write(path, [bytes(MPCapable(version=1, flags="AH")), bytes(MPDSS(data_ack=5)),
                  bytes(MPPrio(flags=1)), bytes(MPTcpRst(flags="T", reason=1))])
    assert reserved_bits(str(path)) == []


def test_each_reserved_bit_is_found(tmp_path) -> None:
    path = tmp_path / "dirty.pcap"
    dss = MPDSS(data_ack=5)
    dss.reserved = 0x40
    prio = MPPrio(flags=1)
    prio.reserved = 0x1
    _write(path, [bytes(MPCapable(version=1, flags="BH")), bytes(MPCapable(version=1, flags="CH")),
                  bytes(dss), bytes(prio), bytes(MPTcpRst(flags="U", reason=1))])
    found = reserved_bits(str(path))
    assert [(frame, subtype) for frame, subtype, _ in found] == [
        (1, "MP_CAPABLE"), (3, "DSS"), (4, "MP_PRIO"), (5, "MP_TCPRST")]   # C is defined
    assert reserved_bits(str(path), src="10.0.0.9") == []
