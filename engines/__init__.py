"""Pluggable speech and language engines behind small interfaces (see `engines.base`).

Nothing here knows about SIP, RTP or banking. The connector builds engines with
`engines.registry.build_engines` from configuration and the model manifest that
`python -m engines.models` writes.
"""
