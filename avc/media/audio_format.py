"""The audio formats of the connector, spelled once: the phone line's and the engines'.

The line is G.711 at 8 kHz, sent and paced in 20 ms packets (RFC 3551's default ptime, what every carrier
offers); speech engines (Silero VAD, Whisper) take 16 kHz, so received audio is upsampled once to that rate.
"""

from typing import Final

LINE_RATE: Final = 8000  # G.711 and telephone-event clock rate, Hz
PACKET_S: Final = 0.020  # one RTP packet, one tick of the media clock
FRAME_SAMPLES: Final = 160  # samples in one packet at LINE_RATE
ENGINE_RATE: Final = 16000  # what VAD and ASR are fed, and the default rate of played audio
