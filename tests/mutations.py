"""Mutations of valid milter sessions, for the fuzz tests (the in-process
one in tests/unit/test_robustness.py and the daemon tier in tests/fuzz/):
bit flips, truncations, splices, random length fields and command bytes,
inserted, deleted and duplicated bytes.  Seeded: a run is reproducible."""

from __future__ import annotations

import random
from collections.abc import Sequence

INTERESTING_LENGTHS = [0, 1, 2, 5, 12, 13, 65535, 65536, 65537, 69999, 70000, 70001,
                       0x7FFFFFFF, 0xFFFFFFFF]


def packet_offsets(data: bytes) -> list[int]:
    """Where each packet of a well-formed stream starts."""
    offsets, pos = [], 0
    while pos + 4 <= len(data):
        offsets.append(pos)
        pos += 4 + int.from_bytes(data[pos:pos + 4], "big")
    return offsets


class Mutator:
    """Mutates the sessions it was given (each a valid encoded session)."""

    def __init__(self, sessions: Sequence[bytes]) -> None:
        self.sessions = list(sessions)
        self.offsets = [packet_offsets(s) for s in self.sessions]

    def mutate(self, rng: random.Random) -> tuple[bytes, int]:
        """One mutated valid session; returns (data, index of its base session)."""
        bases, i = self.sessions, rng.randrange(len(self.sessions))
        offsets = self.offsets[i]
        data = bytearray(bases[i])
        for _ in range(rng.choice((1, 1, 1, 2, 3))):
            op = rng.randrange(8)
            if op == 0 and data:  # bit flips
                for _ in range(rng.randint(1, 3)):
                    pos = rng.randrange(len(data))
                    data[pos] ^= 1 << rng.randrange(8)
            elif op == 1:  # truncation
                del data[rng.randrange(len(data) + 1):]
            elif op == 2:  # splice with another session
                other = bases[rng.randrange(len(bases))]
                data = data[:rng.randrange(len(data) + 1)] + other[rng.randrange(len(other) + 1):]
            elif op == 3:  # a random length field
                pos = rng.choice(offsets) if offsets and rng.random() < 0.8 else \
                    rng.randrange(max(1, len(data)))
                value = rng.choice(INTERESTING_LENGTHS) if rng.random() < 0.5 else \
                    rng.randrange(0, 300)
                data[pos:pos + 4] = value.to_bytes(4, "big")
            elif op == 4:  # random command byte
                if offsets:
                    pos = rng.choice(offsets) + 4
                    if pos < len(data):
                        data[pos] = rng.randrange(256)
            elif op == 5:  # insert random bytes
                pos = rng.randrange(len(data) + 1)
                data[pos:pos] = rng.randbytes(rng.randint(1, 8))
            elif op == 6:  # delete a range
                pos = rng.randrange(len(data) + 1)
                del data[pos:pos + rng.randint(1, 16)]
            elif offsets:  # duplicate a packet elsewhere
                k = rng.randrange(len(offsets))
                start = offsets[k]
                end = offsets[k + 1] if k + 1 < len(offsets) else len(bases[i])
                pos = rng.choice(offsets)
                data[pos:pos] = bases[i][start:end]
        return bytes(data), i


def pieces_of(data: bytes, rng: random.Random) -> list[bytes]:
    """``data`` whole (mostly) or cut into a few pieces."""
    if rng.random() < 0.8:
        return [data]
    cuts = sorted(rng.randrange(len(data) + 1) for _ in range(rng.randint(1, 4)))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
