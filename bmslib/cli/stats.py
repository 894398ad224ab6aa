"""``bms stats``: what the state store holds (bans, list entries, greylist
triplets) and, when ``[metrics] listen`` is set, the running daemon's live
figures scraped from its endpoint (messages by verdict and reason,
connections; counted since the daemon started)."""

from __future__ import annotations

import argparse
import json
import time
import urllib.error
import urllib.request
from collections import Counter
from typing import Any

from ..config import Config
from ..log import escape
from ..metrics import MetricsError, parse_listen
from ..state.records import GreylistMatch
from .common import CommandError, config_of, opened_store

NAME = "stats"
HELP = "print what the state store holds and the running daemon's live figures"
SCRAPE_TIMEOUT = 5.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object (store, live) instead of text")
    parser.set_defaults(run=run_stats)


def store_figures(config: Config) -> dict[str, Any]:
    now = time.time()
    with opened_store(config) as store:
        bans = Counter(b.kind for b in store.bans(now))
        grey = store.greylist_entries(GreylistMatch())
        passed = sum(1 for e in grey if e.passed)
        return {"store": store.path, "banned_ips": bans["ip"], "banned_domains": bans["domain"],
                "whitelist": len(store.list_entries("whitelist", now)),
                "blacklist": len(store.list_entries("blacklist", now)),
                "greylist_passed": passed, "greylist_waiting": len(grey) - passed}


def metrics_url(listen: str) -> str:
    """Where ``[metrics] listen`` is scraped from this host (a wildcard address
    is asked on loopback)."""
    host, port = parse_listen(listen)
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/metrics"


def live_figures(url: str) -> dict[str, Any]:
    """Messages by verdict and reason, connections: from the exposition text."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT) as reply:
            text = reply.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise CommandError(f"live figures: {url}: {reason}") from None
    messages: Counter[tuple[str, str]] = Counter()
    figures: dict[str, Any] = {"url": url, "connections": 0, "active_connections": 0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "bms_messages_total":
                messages[(sample.labels["verdict"], sample.labels["reason"])] += int(sample.value)
            elif sample.name == "bms_connections_total":
                figures["connections"] += int(sample.value)
            elif sample.name == "bms_active_connections":
                figures["active_connections"] += int(sample.value)
    figures["messages"] = [{"verdict": v, "reason": r, "count": n}
                           for (v, r), n in sorted(messages.items())]
    return figures


def _print_text(store: dict[str, Any], live: dict[str, Any] | None) -> None:
    print(f"state store {escape(store['store'])}")
    print(f"  banned IPs         {store['banned_ips']}")
    print(f"  banned domains     {store['banned_domains']}")
    print(f"  whitelist entries  {store['whitelist']}")
    print(f"  blacklist entries  {store['blacklist']}")
    print(f"  greylist triplets  {store['greylist_passed']} passed, "
          f"{store['greylist_waiting']} waiting")
    if live is None:
        print("live figures: [metrics] listen is not set")
        return
    print(f"live figures from {live['url']} (since the daemon started)")
    print(f"  connections        {live['connections']} served, "
          f"{live['active_connections']} active")
    for m in live["messages"]:
        print(f"  {m['verdict']:<16} {escape(m['reason']):<32} {m['count']}")


def run_stats(args: argparse.Namespace) -> int:
    config = config_of(args)
    store = store_figures(config)
    listen = config.get("metrics", "listen")
    live: dict[str, Any] | None = None
    failure = ""
    if listen:
        try:
            live = live_figures(metrics_url(str(listen)))
        except (CommandError, MetricsError) as exc:
            failure = str(exc)
    if args.json:
        print(json.dumps({"store": store, "live": live}, indent=1))
    else:
        _print_text(store, live if listen else None)
    if failure:
        raise CommandError(failure)
    return 0
