"""The MPTcpExt counters of Linux 6.18.44-fc-v1045 (its net/mptcp/mib.c), written by
tools/known_counters.py: a counter a case reads that is neither here nor in the running kernel
is a typo in the case, not a counter some older kernel lacks."""

MPTCP_COUNTERS = frozenset((
    "AddAddr", "AddAddrDrop", "AddAddrTx", "AddAddrTxDrop", "Blackhole",
    "DSSCorruptionFallback", "DSSCorruptionReset", "DSSNoMatchTCP", "DSSNotMatching",
    "DataCsumErr", "DssFallback", "DuplicateData", "EchoAdd", "EchoAddTx", "EchoAddTxDrop",
    "FallbackFailed", "InfiniteMapRx", "InfiniteMapTx", "MD5SigFallback", "MPCapableACKRX",
    "MPCapableDataFallback", "MPCapableEndpAttempt", "MPCapableFallbackACK",
    "MPCapableFallbackSYNACK", "MPCapableSYNACKRX", "MPCapableSYNRX", "MPCapableSYNTX",
    "MPCapableSYNTXDisabled", "MPCapableSYNTXDrop", "MPCurrEstab", "MPFailRx", "MPFailTx",
    "MPFallbackTokenInit", "MPFastcloseRx", "MPFastcloseTx", "MPJoinAckHMacFailure",
    "MPJoinAckRx", "MPJoinNoTokenFound", "MPJoinPortAckRx", "MPJoinPortSynAckRx",
    "MPJoinPortSynRx", "MPJoinRejected", "MPJoinSynAckBackupRx", "MPJoinSynAckHMacFailure",
    "MPJoinSynAckRx", "MPJoinSynBackupRx", "MPJoinSynRx", "MPJoinSynTx",
    "MPJoinSynTxBindErr", "MPJoinSynTxConnectErr", "MPJoinSynTxCreatSkErr", "MPPrioRx",
    "MPPrioTx", "MPRstRx", "MPRstTx", "MPTCPRetrans", "MismatchPortAckRx",
    "MismatchPortSynRx", "NoDSSInWindow", "OFOMerge", "OFOQueue", "OFOQueueTail", "PortAdd",
    "RcvWndConflict", "RcvWndConflictUpdate", "RcvWndShared", "RmAddr", "RmAddrDrop",
    "RmAddrTx", "RmAddrTxDrop", "RmSubflow", "SimultConnectFallback", "SndWndShared",
    "SubflowRecover", "SubflowStale", "WinProbe",
))
