"""The built-in policies, one small file each, written in the same API a user's policy file
uses (mptcplab.pm.policy.Policy): subflows, ndiffports, fullmesh, backup-preference."""
