"""Pure unit tier: no sockets, no MTA."""
