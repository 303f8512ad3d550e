"""The conversation: the per-call engine chain (VAD -> ASR -> responder -> TTS), turn-taking, sentences, the
prompt cache and the responders (banking, LLM, repeat), plus the echo and tone test modes. The only wing that
uses `engines` and `banking`."""
