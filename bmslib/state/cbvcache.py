"""The CBV result cache kept in the state store, so that every worker (and,
with a shared store, every MX) probes an address once per period."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, replace
from typing import Protocol

from ..interfaces import Clock
from ..policy.cbv import CbvResult, CbvStatus
from ..policy.greylist import StoreUnavailable

log = logging.getLogger(__name__)

KIND = "cbv"


class CacheStore(Protocol):
    def cache_get(self, kind: str, key: str, now: float) -> str | None: ...

    def cache_put(self, kind: str, key: str, value: str, until: float) -> None: ...


class StoreCbvCache:
    """:class:`bmslib.policy.cbv.CbvCache` over a store's cache table."""

    def __init__(self, store: CacheStore, clock: Clock) -> None:
        self.store = store
        self.clock = clock

    def get(self, address: str) -> CbvResult | None:
        """The cached result; None when there is none, or the store is down
        (the store logs that: the probe is then made again)."""
        try:
            raw = self.store.cache_get(KIND, address, self.clock.now())
        except StoreUnavailable:
            return None
        if raw is None:
            return None
        try:
            data = json.loads(raw)
            data["status"] = CbvStatus(data["status"])
            return CbvResult(**data)
        except (ValueError, TypeError, KeyError) as exc:  # written by another version
            log.warning("CBV cache entry for %s unreadable (%s): ignored", address, exc)
            return None

    def put(self, address: str, result: CbvResult, ttl: float) -> None:
        if ttl <= 0:
            return
        data = asdict(replace(result, cached=False))
        data["status"] = result.status.value
        try:
            self.store.cache_put(KIND, address, json.dumps(data), self.clock.now() + ttl)
        except StoreUnavailable:
            pass  # logged by the store; the next message probes again
