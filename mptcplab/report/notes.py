"""One plain sentence per step of a ladder, with the RFC 8684 section it illustrates.

The ``Narrator`` reads the tracker's annotations in capture order and says what each segment
does in the protocol: who offers MPTCP, whose key this is, which token a join names, whether an
HMAC or a checksum was recomputed equal, when a connection falls back. It keeps what it needs
to say "again", "first" or "after 3 SYNs" (the tracker keeps connections, not a story).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mptcplab import crypto
from mptcplab.analysis import INITIAL, M64, SIDE_NAMES, Annotated, Half


@dataclass(frozen=True)
class Note:
    """A sentence about one step, and the RFC 8684 section it illustrates ("" for none)."""

    text: str
    rfc: str = ""

    def __str__(self) -> str:
        return f"{self.text} (RFC 8684 §{self.rfc})" if self.rfc else self.text


def _opts(ann: Annotated) -> list[tuple[int, dict[str, Any]]]:
    return [(i, o) for i, o in enumerate(ann.seg.options) if not o.get("malformed")]


def _verdict(ann: Annotated, index: int, name: str) -> bool | None:
    return ann.verdicts(index).get(name)


def _checked(verdict: bool | None, what: str) -> str:
    if verdict is None:
        return f"the capture lacks what is needed to check the {what}"
    return f"the lab recomputed the {what}: it matches" if verdict else \
        f"the lab recomputed the {what}: it does NOT match"


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + "."


class Narrator:
    """Sentences for the steps of one capture, fed in capture order."""

    def __init__(self) -> None:
        self._syns: dict[Half, list[float]] = {}      # MP_CAPABLE SYN times per subflow
        self._plain_syn: set[Half] = set()
        self._data: set[Half] = set()                 # directions whose first data was told
        self._acked: set[Half] = set()
        self._fell_back: set[int] = set()
        self._said: set[tuple[Any, ...]] = set()      # things told once: failed mappings ...
        self._fails: dict[int, int] = {}              # connection -> side of the first MP_FAIL

    def _once(self, *key: Any) -> bool:
        if key in self._said:
            return False
        self._said.add(key)
        return True

    def note(self, ann: Annotated) -> Note | None:
        """What this segment does, in one sentence (None when there is nothing to add)."""
        seg, half = ann.seg, ann.half
        if half is None:
            return None
        flags = seg.tcp_flags
        side = half.side
        who = SIDE_NAMES[side] if side is not None else "this end"
        peer = SIDE_NAMES[1 - side] if side is not None else "the other end"
        opts = _opts(ann)
        names = [o["subtype"] for _, o in opts]
        conn = half.subflow.conn
        if "R" in flags:
            for i, o in opts:
                if o["subtype"] == "MP_FASTCLOSE":
                    return Note(f"MP_FASTCLOSE: the {who} closes the whole connection at once, "
                                "resetting every subflow; the key proves it is genuine.", "3.5")
            for i, o in opts:
                if o["subtype"] == "MP_TCPRST":
                    return Note(f"The {who} resets this subflow and says why: "
                                f"{o['reason_name']}.", "3.6")
            return Note(f"The {who} resets this subflow (TCP RST).")
        if "S" in flags:
            return self._syn(ann, half, who, peer, opts)
        for i, o in opts:
            kind = o["subtype"]
            if kind == "MP_CAPABLE" and "receiver_key" in o:
                if "data_level_len" in o:
                    if half in self._data:
                        return None
                    self._data.add(half)
                    text = (f"The {who}'s first data rides on MP_CAPABLE: both keys again "
                            "(in case the third ACK was lost) and the data-level length; its "
                            f"first byte is data sequence number IDSN + 1.")
                    if "checksum" in o:
                        text += " " + _sentence(_checked(_verdict(ann, i, "checksum_valid"),
                                                         "DSS checksum"))
                    return Note(text, "3.1")
                return Note(f"Third ACK: the {who} repeats both keys, so both ends now know "
                            "the tokens and initial data sequence numbers (IDSNs).", "3.1")
            if kind == "MP_JOIN":
                return Note(f"Third ACK of the join: the {who} proves it knows both keys with "
                            f"a full HMAC of both nonces; "
                            + _checked(_verdict(ann, i, "hmac_valid"), "HMAC") + ".", "3.2")
            if kind == "ADD_ADDR":
                where = o["addr"] + (f" port {o['port']}" if o["port"] else "")
                if o["echo"]:
                    return Note(f"The {who} echoes the announcement of address id "
                                f"{o['addr_id']} ({where}) to confirm it arrived; an echo "
                                "carries no HMAC.", "3.4.1")
                text = f"The {who} announces another address it has: id {o['addr_id']}, {where}"
                if o["hmac"] is not None:
                    text += (f"; an HMAC of both keys proves it comes from the {who}, and "
                             + _checked(_verdict(ann, i, "hmac_valid"), "HMAC"))
                return Note(text + ".", "3.4.1")
            if kind == "REMOVE_ADDR":
                ids = ", ".join(map(str, o["addr_ids"]))
                return Note(f"The {who} withdraws address id {ids}: subflows using it are "
                            "closed.", "3.4.2")
            if kind == "MP_PRIO":
                return Note(f"MP_PRIO B={int(o['backup'])}: the {who} asks the {peer} to "
                            + ("use this subflow only as a backup, when no regular one works."
                               if o["backup"] else "use this subflow as a regular one again."),
                            "3.3.8")
            if kind == "MP_FAIL" and conn is not None and side is not None:
                first = self._fails.setdefault(conn.number, side)
                if first != side:
                    return Note(f"The {who} answers the MP_FAIL with an MP_FAIL of its own.",
                                "3.7")
                return Note(f"MP_FAIL: the {who} found a DSS checksum that does not match and "
                            "names the data sequence number of the failed mapping.", "3.7")
        for i, o in opts:
            if o["subtype"] != "DSS":
                continue
            if o.get("data_level_len") == 0 and "dsn" in o:
                return Note(f"An infinite mapping: the {who} falls back to plain TCP on this "
                            "subflow; from here the subflow bytes are the data.", "3.7")
            if o["data_fin"]:
                # once per connection, end and DATA_FIN: the same one on another subflow
                # is a repeat too
                where = (conn.number, side) if conn is not None else (half,)
                if not self._once("data_fin", *where, o.get("dsn")):
                    return Note(f"DATA_FIN again: the {who} repeats it until it is "
                                "acknowledged at the data level.", "3.3.3")
                return Note(f"DATA_FIN: the {who} has no more data for the whole connection "
                            "(a connection-level FIN, acknowledged by a DATA_ACK).", "3.3.3")
            if "checksum" in o and _verdict(ann, i, "checksum_valid") is False and \
                    self._once("failed", half, o["dsn"], o["ssn"]):
                return Note("The lab recomputed this mapping's DSS checksum over the bytes "
                            "that arrived: it does NOT match, the data was changed on the way.",
                            "3.3.1")
        if "F" in flags:
            return Note(f"The {who} closes this subflow (TCP FIN).", "3.3.3")
        if seg.payload_len and half not in self._data:
            self._data.add(half)
            dss = [(i, o) for i, o in opts if o["subtype"] == "DSS" and "dsn" in o]
            if dss:
                i, o = dss[0]
                dsn = o["dsn"]
                idsn = conn.idsns[side] if conn is not None and side is not None else None
                if idsn is not None:
                    if o["dsn_len"] == 4:
                        dsn = crypto.expand_dsn(dsn, idsn)
                    start = f"at byte {(dsn - idsn) & M64} of the {who}'s stream"
                else:
                    start = f"at data sequence number {dsn}"
                text = (f"Data from the {who}, with a DSS mapping: {o['data_level_len']} "
                        f"bytes {start} travel as this subflow's bytes from {o['ssn']} on.")
                if "checksum" in o:
                    text += " " + _sentence(_checked(_verdict(ann, i, "checksum_valid"),
                                                     "DSS checksum"))
                return Note(text, "3.3.1")
            if conn is not None and conn.fell_back() and not names:
                return Note(f"Plain TCP data from the {who}: no DSS option, the connection "
                            "fell back to TCP.", "3.7")
            return None
        if "DSS" in names and half not in self._acked and not seg.payload_len:
            self._acked.add(half)
            return Note(f"The {who} acknowledges at the data level too: DATA_ACK is the next "
                        "data sequence number it expects.", "3.3.2")
        return None

    def _syn(self, ann: Annotated, half: Half, who: str, peer: str,
             opts: list[tuple[int, dict[str, Any]]]) -> Note | None:
        seg = ann.seg
        capable = next((o for _, o in opts if o["subtype"] == "MP_CAPABLE"), None)
        join = next(((i, o) for i, o in opts if o["subtype"] == "MP_JOIN"), None)
        if "A" not in seg.tcp_flags:                                    # SYN
            if capable is not None:
                times = self._syns.setdefault(half, [])
                times.append(seg.time)
                if len(times) > 1:
                    return Note(f"No answer: the {who} sends the MP_CAPABLE SYN again, "
                                f"{times[-1] - times[-2]:.2f} s after the previous one "
                                f"(attempt {len(times)}).", "3.1")
                wants = (" It asks for DSS checksums (flag A)." if "A" in capable["flags"]
                         else "")
                return Note(f"The {who} offers MPTCP version {capable['version']} with "
                            "MP_CAPABLE; in version 1 the SYN carries no key yet." + wants,
                            "3.1")
            if join is not None:
                o = join[1]
                backup = " B=1: it wants this subflow as a backup." if o["backup"] else ""
                return Note(f"A new subflow: MP_JOIN names the connection by the {peer}'s "
                            f"token {o['token']:#010x} and brings a random nonce; address id "
                            f"{o['addr_id']}.{backup}", "3.2")
            tried = self._syns.get(half)
            if tried and half not in self._plain_syn:
                self._plain_syn.add(half)
                return Note(f"After {len(tried)} MP_CAPABLE SYNs went unanswered, the {who} "
                            "tries plain TCP: this connection falls back to TCP.", "3.1")
            return None
        if capable is not None:                                         # SYN-ACK
            wants = (" It wants DSS checksums (flag A): both ends use them." if "A" in
                     capable["flags"] else "")
            return Note(f"The {who} accepts MPTCP and sends its key; the {who}'s token and "
                        "IDSN are hashes of it." + wants, "3.1")
        if join is not None:
            i, o = join
            backup = " B=1: a backup subflow for it." if o["backup"] else ""
            return Note(f"The {who} proves it knows both keys: a truncated HMAC over both "
                        f"nonces; {_checked(_verdict(ann, i, 'hmac_valid'), 'HMAC')}."
                        + backup, "3.2")
        conn = half.subflow.conn
        if conn is not None and half.subflow.kind == INITIAL and \
                conn.number not in self._fell_back:
            self._fell_back.add(conn.number)
            return Note(f"The {who} answers without MP_CAPABLE: plain TCP, no MPTCP on this "
                        "connection.", "3.7")
        return None
