"""The Fogline cloud aggregator: uplink ingest, store, read API and retention.

Gateways publish numbered batches on `fogline/<gateway-id>/up/<kind>`; `cloud.ingest`
stores each `(gateway, seq)` once and acknowledges what is on disk, `cloud.api` serves
it, `cloud.app` runs both (plus retention) in one event loop.
"""
