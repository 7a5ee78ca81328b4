"""Receive DAVE (end-to-end encrypted) Discord voice with discord-ext-voice-recv: the one shim into library internals.

voice-recv 0.5.2a179 predates DAVE: after its transport decryption the Opus payload is still DAVE-encrypted, the first
such frame raises `OpusError` in its decoder and the router thread dies (the bot goes deaf without a sign). This module
adds the DAVE step and fixes the upstream faults that would otherwise kill receive. Everything private it relies on is
listed here and checked by `shim_compatibility_problems()`; a test asserts that list is empty, so an upgrade of
discord.py or voice-recv fails loudly instead of silently deafening the bot (`vr/` = discord/ext/voice_recv/,
`dpy/` = discord/, versions discord.py 2.7.1 and voice-recv 0.5.2a179).

Modules: `frames` (what a DAVE frame looks like, the receive counters: no internals), `receive` (voice-recv's
reader, router and decoder with the DAVE step), `connection` (discord.py's connection state and the voice client:
resume, UDP reader, gateway hook), `compat` (the check). What it relies on:

* `PacketRouter.feed_rtp(packet)` (vr/router.py:41) — overridden: called by `AudioReader.callback` (vr/reader.py:182)
  on discord.py's socket thread after transport decryption and header-extension removal, before the jitter buffer.
  Buffered payloads must already be plain Opus because the decoder's FEC path peeks the next one (vr/opus.py:157-168).
  Anything raised here stops the reader (vr/reader.py:183-186), so nothing escapes.
* `PacketRouter.get_decoder` / `_lock` / `decoders` (vr/router.py:58-64) — re-implemented to build `SafePacketDecoder`.
  `PacketRouter.destroy_decoder` (vr/router.py:80-85, called by the hook on op 13) — extended to drop frames of that
  stream still waiting for a key; `_end_thread` (vr/router.py:38) tells the hold timer the router has stopped.
  `PacketRouter.run` / `_do_run` / `waiter` (vr/router.py:96-113) — `run` re-implemented so a router thread that ends
  after `listen()` was called again does not stop the new reader (upstream stops whatever reader is current).
* `PacketDecoder._decode_packet` (vr/opus.py:149-172) — wrapped: an `OpusError` (a frame that decrypts but is not
  valid Opus) or any other decoder error would end the router thread (vr/router.py:96-113) and with it listening for
  everybody.
* `AudioReader.packet_router`, `.keepalive`, `.decryptor.decrypt_rtp`, `.callback` (vr/reader.py:45-60, 136-186) — the
  router is swapped before `start()`; `UDPKeepAlive.delay` is 5000 *seconds* upstream (vr/reader.py:386,419);
  transport decrypt failures are counted by wrapping the per-instance `decrypt_rtp` (bound at vr/reader.py:200).
* `RTPPacket.padding` / `.decrypted_data` (vr/rtp.py:173, 184) — padding is parsed but never stripped (vr/rtp.py:203).
* `vc._connection.dave_session` / `.dave_protocol_version` / `.dave_downgraded` (dpy/voice_state.py:219-222) — read
  for every packet: discord.py re-initialises the session in place, may downgrade to protocol 0 with a stale group,
  and sets the protocol version to 1 at op 24 while kids send plain Opus until op 22; only `dave_downgraded`
  (cleared by the upgrade's op 22, dpy/voice_state.py:316-320) says an upgrade is still pending. davey's
  `DaveSession.status` (pending / awaiting_response) says an MLS message with new keys is on its way.
* `vc._get_id_from_ssrc`, `_id_to_ssrc`, `_ssrc_to_id`, `_reader` (vr/voice_client.py:40-43, 118-135) — SSRC → user.
  `_add_ssrc` (vr/voice_client.py:118-123) is extended: a stream that changes hands (an SSRC re-announced for someone
  else, or a kid announced with a new SSRC without an op 13) gets a fresh decoder. On op 13 the hook dispatches
  `voice_member_disconnect` (vr/gateway.py:98-108), which `TutorSink` listens for to free that kid's stream.
* voice-recv's gateway `hook` (vr/gateway.py:49) passed as `VoiceConnectionState(hook=...)` (dpy/voice_state.py:198) —
  wrapped, because discord.py awaits it in `received_message` (dpy/gateway.py:1032) and its poller task only survives
  ConnectionClosed/Timeout (dpy/voice_state.py:672-674): any other exception silently ends heartbeats and DAVE
  transitions while `is_connected()` stays True. `_remove_ssrc` is fixed: upstream dereferences `_reader` even when not
  listening, so op 13 (a user leaves) before `listen()` raised `AttributeError` (vr/voice_client.py:125-129).
* `VoiceConnectionState` is subclassed (`DaveVoiceConnectionState`): `_connect(..., resume=True)`, which discord.py
  calls on close code 4015 (dpy/voice_state.py:715-732), really resumes — a new `DiscordVoiceWebSocket` from
  `from_connection_state(resume=True, seq_ack=...)` polled until op 9 RESUMED, with `token` / `session_id` /
  `secret_key` / `ws` as they were — and falls back to `disconnect(cleanup=False)` + a fresh connect. Its
  `SocketReader` (dpy/voice_state.py:86-176, `_do_run` over `state.socket`, `_callbacks`, `_running`, `_end`) is
  replaced by one that selects for 0.25 s instead of 30 s, so a UDP socket discord.py replaces is noticed.
* `AudioReader._is_ip_discovery_packet` (vr/reader.py:133) — discovery answers are not counted as RTP.
* The `discord.ext.voice_recv.reader` logger gets a filter: it logs transport garbage at ERROR once per packet
  (vr/reader.py:149-158, 178); the shim counts those, so one line per interval is enough.
"""

from bot.audio.dave.compat import shim_compatibility_problems
from bot.audio.dave.connection import DaveVoiceConnectionState, DaveVoiceRecvClient, guarded_hook
from bot.audio.dave.frames import OPUS_SILENCE, ReceiveStats, has_dave_trailer
from bot.audio.dave.receive import DaveAudioReader, DavePacketRouter, SafePacketDecoder

__all__ = [
    "OPUS_SILENCE",
    "DaveAudioReader",
    "DavePacketRouter",
    "DaveVoiceConnectionState",
    "DaveVoiceRecvClient",
    "ReceiveStats",
    "SafePacketDecoder",
    "guarded_hook",
    "has_dave_trailer",
    "shim_compatibility_problems",
]
