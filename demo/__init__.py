"""The demo and the pieces it needs: a scripted bank call (`python -m demo`, `make demo`), the SIP caller that places
it, the speaking caller, an independent RTP peer and the OpenSIPS protocol double it calls when no real OpenSIPS is
given. None of this ships with the connector (`avc`), which never imports it; the tests use the same pieces.
"""
