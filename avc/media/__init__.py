"""Media: RTP in and out of a call (`stream`), the jitter buffer, G.711, resampling, RFC 4733 DTMF, tones, the
shared 20 ms clock and the RTP port pool. Knows nothing of SIP signalling or of the conversation."""
