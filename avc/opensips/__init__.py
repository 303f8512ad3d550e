"""The OpenSIPS side of the connector: MI commands (`mi`), E_UA_SESSION events and their subscription, SIP headers
and SDP, and the dialog variables mirrored to the edge. Knows nothing of media beyond the audio format, nor of the
conversation."""
