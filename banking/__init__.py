"""The banking layer: what the AI voice line says and does for a caller, knowing nothing of SIP, RTP or speech.

It receives recognised text (untrusted), keypad digits and call facts, and returns what to say and what
to do (`banking.dialogue`). Facts come from a `BankBackend` (`banking.backend`, reference bank in
`banking.pg_bank`), which checks authorisation itself; text is redacted (`banking.redact`) before it is
stored or logged; the per-call context lives in Redis (`banking.context`).
"""
