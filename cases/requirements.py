"""The normative sentences of RFC 8684 §3 that can be seen on the wire or at the socket, in
the lab's own words, each with its section and level. Cases name the ones they check with
`@covers("3.1-syn-v2")`; `pytest cases/ --requirements` joins the two into the conformance
table (docs/conformance.md).

A requirement no case can check here says why in `untestable` (a property of the
implementation's internals, a local policy with no wire trace, or something the lab cannot
produce). Levels are the RFC's keywords; "—" marks a rule the RFC states without one (a
definition every implementation must follow to interoperate).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Requirement:
    id: str
    section: str
    level: str            # MUST, MUST NOT, SHOULD, SHOULD NOT, MAY, —
    text: str             # the requirement in the lab's words
    untestable: str = ""  # why no case can check it here


R = Requirement

REQUIREMENTS: tuple[Requirement, ...] = (
    # -- across §3 ------------------------------------------------------------------------------
    R("3-reserved-send", "3", "MUST", "Reserved and unassigned bits are zero in every MPTCP "
      "option a host sends."),
    R("3-reserved-recv", "3", "MUST", "A receiver ignores the reserved bits of an option: the "
      "option takes effect as if they were zero."),
    R("3-tcp-valid", "3", "MUST", "An MPTCP option rides on TCP: a segment that fails TCP's "
      "checks (sequence number outside the window) is dropped before any MPTCP signal on it "
      "is acted upon."),
    # -- §3.1 MP_CAPABLE -------------------------------------------------------------------------
    R("3.1-syn-form", "3.1", "—", "The initiator's SYN carries MP_CAPABLE without a key (4 "
      "bytes), the SYN-ACK the listener's key (12), the third ACK both keys, sender's first "
      "(20)."),
    R("3.1-key-random", "3.1", "MUST", "Keys are random per connection: two connections "
      "between the same hosts use different keys and tokens."),
    R("3.1-plain-syn", "3.1", "MUST NOT", "A listener answers a SYN without MP_CAPABLE "
      "with a SYN-ACK without MP_CAPABLE (plain TCP)."),
    R("3.1-version-lower", "3.1", "MUST", "The listener answers with a version equal to or "
      "lower than the one offered: a SYN offering version 2 gets a version 1 SYN-ACK from "
      "a v1 host."),
    R("3.1-version-fallback", "3.1", "MUST", "An initiator that receives a SYN-ACK with a "
      "version other than the one it uses continues as plain TCP (no MPTCP option after)."),
    R("3.1-v0-fallback", "3.1", "—", "A v1-only listener answers a version 0 SYN as plain "
      "TCP."),
    R("3.1-b-flag-send", "3.1", "MUST", "B (extensibility) is 0 in every MP_CAPABLE sent."),
    R("3.1-b-flag-recv", "3.1", "MUST", "An MP_CAPABLE with B set that the receiver does not "
      "understand is ignored: the connection is plain TCP."),
    R("3.1-no-crypto", "3.1", "MUST", "An MP_CAPABLE with none of the crypto bits D-H set is "
      "invalid and ignored: plain TCP."),
    R("3.1-crypto-choice", "3.1", "—", "The crypto bits negotiate like the checksum bit: "
      "offered several algorithms including HMAC-SHA256 (H), a listener that supports H "
      "answers with H."),
    R("3.1-third-ack-invalid", "3.1", "MUST", "A third ACK whose MP_CAPABLE is missing or "
      "invalid (B set, no crypto bit) makes the listener continue as plain TCP."),
    R("3.1-checksum-negotiation", "3.1", "MUST", "DSS checksums are used in both directions "
      "when either SYN or SYN-ACK sets A; the ACK's A shows the outcome."),
    R("3.1-c-flag-send", "3.1", "—", "A listener that accepts no further subflows to its "
      "initial address and port sets C in its SYN-ACK."),
    R("3.1-c-flag-recv", "3.1", "MUST NOT", "A host that received C=1 opens no additional "
      "subflow to the sender's initial address and port."),
    R("3.1-mpc-until-dss", "3.1", "MUST", "The third ACK is not delivered reliably: until the "
      "initiator has received a DSS, it sends MP_CAPABLE (both keys) with its data, "
      "retransmissions included."),
    R("3.1-mpc-data-no-dss", "3.1", "—", "When the initiator's first data is acknowledged "
      "at the TCP level without a DSS, MPTCP did not survive the path: the initiator falls "
      "back to TCP."),
    R("3.1-join-after-dss", "3.1", "MUST NOT", "No MP_JOIN is sent on a connection before the "
      "initiator knows the listener got its keys (a DSS came back)."),
    R("3.1-syn-fallback", "3.1", "MAY", "After MP_CAPABLE SYNs go unanswered, the initiator "
      "may retry without MP_CAPABLE (local policy); it then continues as plain TCP."),
    R("3.1-synack-stripped", "3.1", "MUST", "An initiator whose SYN-ACK arrives without "
      "MP_CAPABLE continues as plain TCP."),
    R("3.1-tfo", "3.1", "MAY", "TCP Fast Open data may ride in the MP_CAPABLE SYN (Appendix "
      "B): the listener takes it and the connection is MPTCP."),
    R("3.1-syncookies", "3.1", "—", "The listener can be stateless until the third ACK (SYN "
      "cookies): the third ACK's keys suffice to create the connection."),
    # -- §3.2 MP_JOIN ----------------------------------------------------------------------------
    R("3.2-join-token", "3.2", "—", "The MP_JOIN SYN carries the receiver's token (from its "
      "key) and a random nonce."),
    R("3.2-join-hmacs", "3.2", "—", "The SYN-ACK carries the truncated HMAC (listener's key "
      "first), the third ACK the full HMAC (initiator's key first)."),
    R("3.2-unknown-token", "3.2", "MUST", "A SYN with MP_JOIN naming an unknown token is "
      "answered with a RST."),
    R("3.2-stale-token", "3.2", "MUST", "A token whose connection has closed is unknown: a "
      "join with it is reset."),
    R("3.2-synack-hmac", "3.2", "MUST", "An initiator whose SYN-ACK HMAC does not verify "
      "closes the subflow with a RST."),
    R("3.2-ack-hmac", "3.2", "MUST", "A listener whose third-ACK HMAC does not verify closes "
      "the subflow with a RST."),
    R("3.2-synack-no-join", "3.2", "MUST", "An initiator whose join SYN-ACK has no MP_JOIN "
      "closes the subflow with a RST."),
    R("3.2-ack-no-join", "3.2", "MUST", "A listener whose join third ACK has no MP_JOIN "
      "closes the subflow with a RST."),
    R("3.2-fourth-ack", "3.2", "MUST", "The third ACK of a join is delivered reliably: the "
      "initiator retransmits it until the listener's ACK (the fourth) arrives."),
    R("3.2-no-data-before-fourth", "3.2", "MUST NOT", "The initiator sends no data on a "
      "joined subflow before the fourth ACK arrives."),
    R("3.2-join-limit", "3.2", "MAY", "A host may refuse a join (e.g. beyond its subflow "
      "limit) with a RST."),
    R("3.2-backup", "3.2", "—", "B=1 in a join asks the receiver to send on that subflow "
      "only when no regular subflow is available (SYN from the initiator, SYN-ACK from the "
      "listener)."),
    R("3.2-join-data", "3.2", "—", "A joined subflow carries data of the same connection "
      "(data sequence numbers in the one data stream)."),
    # -- §3.3 DSS ----------------------------------------------------------------------------------
    R("3.3-mapping", "3.3", "MUST", "Data on an MPTCP subflow is covered by a mapping (DSS or "
      "the MP_CAPABLE with data) from subflow to data sequence numbers."),
    R("3.3-no-mapping-join", "3.3", "MUST", "Data with no mapping on a joined subflow is "
      "invalid: the subflow is reset (MP_TCPRST)."),
    R("3.3-dsn32", "3.3", "MUST", "4-byte DSNs and Data ACKs are accepted and expanded to 64 "
      "bits from the sequence space in use."),
    R("3.3-dsn32-wrap", "3.3", "MUST", "Expansion of 4-byte DSNs follows the data stream "
      "across a wrap of the lower 32 bits."),
    R("3.3-checksum-absent", "3.3", "MUST", "With checksums negotiated, a DSS without one "
      "makes the receiver close the subflow with a RST."),
    R("3.3-checksum-unexpected", "3.3", "MUST", "Without checksums negotiated, a DSS with "
      "one makes the receiver close the subflow with a RST."),
    R("3.3-checksum-verify", "3.3", "—", "Every DSS checksum covers the data with the "
      "pseudo-header (64-bit DSN, subflow sequence number, length)."),
    R("3.3-duplicate", "3.3", "—", "The same data sent on two subflows (a reinjection) is "
      "delivered to the application once."),
    R("3.3-out-of-window", "3.3", "MUST NOT", "Data mapped outside the connection-level "
      "receive window is not accepted."),
    R("3.3-data-ack-unsent", "3.3", "SHOULD", "A Data ACK for data never sent is not taken "
      "as acknowledging it (the connection goes on)."),
    R("3.3-reinject", "3.3.6", "MAY", "Data sent on a subflow that fails may be sent again on "
      "another, so the stream survives the loss of a path."),
    R("3.3-data-fin", "3.3.3", "—", "DATA_FIN ends the data stream: the application reads "
      "end of file, and the DATA_FIN is acknowledged with a Data ACK one past its DSN."),
    R("3.3-data-fin-hole", "3.3.3", "MUST", "A DATA_FIN is acted upon (acknowledged, end of "
      "file) only once all data before it has arrived."),
    R("3.3-data-fin-retransmit", "3.3.3", "MUST", "An unacknowledged DATA_FIN is sent again, "
      "with the retransmission timer backing off."),
    R("3.3-subflow-fin", "3.3.3", "MUST", "Once the DATA_FIN is acknowledged, every remaining "
      "subflow is closed with a FIN exchange."),
    R("3.3-prio", "3.3.8", "—", "MP_PRIO changes the priority of a subflow: a backup "
      "carries no data while a regular one can."),
    # -- §3.4 address management -------------------------------------------------------------------
    R("3.4-add-addr-hmac", "3.4.1", "MUST", "ADD_ADDR carries the HMAC of both keys over "
      "address id, address and port; one whose HMAC fails is ignored."),
    R("3.4-add-addr-echo", "3.4.1", "MUST", "The receiver echoes an ADD_ADDR (E=1, same id, "
      "address and port, no HMAC), whether or not it uses it."),
    R("3.4-add-addr-retransmit", "3.4.1", "SHOULD", "An ADD_ADDR not echoed is sent again, a "
      "bounded number of times."),
    R("3.4-add-addr-port", "3.4.1", "—", "An ADD_ADDR may carry a port; the HMAC covers it "
      "and joins go there."),
    R("3.4-add-addr-reannounce", "3.4.1", "—", "An ADD_ADDR re-using an address id with "
      "another port is an announcement like any other: echoed, and the new address and port "
      "can be joined (what happens to subflows of the old pairing is the receiver's choice)."),
    R("3.4-join-failed-retry", "3.4.1", "SHOULD NOT", "After a failed join to an announced "
      "address, no new attempt is made unless the address is announced again."),
    R("3.4-mixed-families", "3.4.1", "MAY", "One connection may use subflows of both IP "
      "versions (an IPv6 address announced on an IPv4 connection)."),
    R("3.4-remove-addr", "3.4.2", "MUST", "REMOVE_ADDR makes the receiver close every "
      "subflow using that address id; the connection goes on over the others."),
    R("3.4-remove-addr-list", "3.4.2", "—", "One REMOVE_ADDR may list several address ids; "
      "each is removed."),
    R("3.4-remove-addr-unknown", "3.4.2", "—", "A REMOVE_ADDR naming no address in use "
      "removes nothing."),
    R("3.4-path-management", "3.4", "MAY", "Which subflows to open is the path manager's local "
      "policy (full mesh, per endpoint, user space); the protocol signals stay the same.",
      ),
    # -- §3.5 MP_FASTCLOSE --------------------------------------------------------------------------
    R("3.5-fastclose", "3.5", "MUST", "An MP_FASTCLOSE carrying the receiver's key closes the "
      "whole connection: RSTs on every subflow, and the application sees a reset."),
    R("3.5-fastclose-key", "3.5", "MUST", "An MP_FASTCLOSE with another key is ignored."),
    R("3.5-fastclose-rst", "3.5", "—", "MP_FASTCLOSE may ride on a RST (all subflows reset at "
      "once) as well as on an ACK."),
    R("3.5-fastclose-send", "3.5", "—", "A host that closes abruptly sends MP_FASTCLOSE with "
      "the peer's key on every subflow."),
    # -- §3.6 MP_TCPRST ---------------------------------------------------------------------------------
    R("3.6-tcprst-reason", "3.6", "SHOULD", "A host resetting a subflow says why with "
      "MP_TCPRST (reason code) on the RST."),
    R("3.6-tcprst-one-subflow", "3.6", "—", "A RST (with MP_TCPRST) on one subflow closes "
      "only that subflow; the connection goes on over the others."),
    R("3.6-tcprst-needs-rst", "3.6", "—", "MP_TCPRST is meaningful only on a RST: on an ACK "
      "it closes nothing."),
    R("3.6-transient", "3.6", "SHOULD NOT", "After a RST with T=0 (permanent) the receiver does "
      "not reopen that subflow; T=1 allows a retry."),
    # -- §3.7 fallback ---------------------------------------------------------------------------------
    R("3.7-strip", "3.7", "MUST", "When MPTCP options vanish on the path (SYN-ACK or data "
      "without them) both ends fall back to TCP and the data arrives intact."),
    R("3.7-mp-fail", "3.7", "MUST", "A checksum failure on a connection with one subflow is "
      "answered with MP_FAIL carrying the DSN of the failed mapping."),
    R("3.7-infinite-mapping", "3.7", "MUST", "The receiver of MP_FAIL (one subflow) falls "
      "back: its data carries an infinite mapping and keeps flowing."),
    R("3.7-fallback-stream", "3.7", "MUST", "After a checksum failure on the only subflow the "
      "connection falls back and the stream arrives whole, as TCP delivers it."),
    R("3.7-fail-reset", "3.7", "MUST", "With several subflows, the subflow whose checksum "
      "failed is reset (MP_FAIL, MP_TCPRST) and its data is sent again on the others."),
    R("3.7-after-fallback", "3.7", "MUST NOT", "Once fallen back, no new subflow joins the "
      "connection."),
    # -- not testable here -----------------------------------------------------------------------------
    R("3.1-token-unique", "3.1", "MUST", "A host picks a key whose token is unique among its "
      "connections (it tries another key on a collision).",
      untestable="needs two connections of one host whose random keys give the same 32-bit "
      "token; the lab cannot choose the kernel's key"),
    R("3.3-rcv-window-shared", "3.3.4", "MUST", "One receive window for the whole connection "
      "(relative to the Data ACK), advertised on every subflow.",
      untestable="window arithmetic inside the receiver; the lab has no way to tell a shared "
      "window from per-subflow windows of the same size"),
    R("3.3-congestion", "3.3.7", "SHOULD", "Coupled congestion control across subflows.",
      untestable="a property of rates under competing traffic, not of single segments; "
      "this kernel has no netem to build the shared bottleneck"),
)

BY_ID = {r.id: r for r in REQUIREMENTS}
assert len(BY_ID) == len(REQUIREMENTS), "duplicate requirement id"
