"""A tour for a first look: the handshake, a second subflow, an announced address.

Three demos in a row, each in its own lab: MP_CAPABLE and the keys (handshake), a second
subflow joining with MP_JOIN (join), and the server announcing an address that the client
then joins (add-addr). Each prints its ladder, what it recomputed, and what it checked; the
files of each go into a folder of their own.
"""

SEQUENCE = ("handshake", "join", "add-addr")
SECONDS = 6
ORDER = 1
