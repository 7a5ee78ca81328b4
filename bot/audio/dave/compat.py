"""`shim_compatibility_problems()`: every private the shim relies on, checked against the installed libraries."""

from __future__ import annotations

import inspect

import davey
import discord
from discord.ext import voice_recv
from discord.ext.voice_recv import rtp as vr_rtp
from discord.ext.voice_recv.gateway import hook as voice_recv_hook
from discord.ext.voice_recv.opus import PacketDecoder
from discord.ext.voice_recv.reader import AudioReader, PacketDecryptor, SpeakingTimer, UDPKeepAlive
from discord.ext.voice_recv.router import PacketRouter
from discord.gateway import DiscordVoiceWebSocket
from discord.voice_state import SocketReader, VoiceConnectionState


def shim_compatibility_problems() -> list[str]:
    """What this module relies on but the installed libraries no longer provide; empty when all is in place."""
    problems: list[str] = []

    def need(ok: bool, what: str) -> None:
        if not ok:
            problems.append(what)

    def source(obj: object) -> str:
        try:
            return inspect.getsource(obj)  # type: ignore[arg-type]
        except (OSError, TypeError):
            return ""

    need(list(inspect.signature(PacketRouter.feed_rtp).parameters) == ["self", "packet"],
         "voice_recv PacketRouter.feed_rtp(self, packet)")
    router = PacketRouter(voice_recv.BasicSink(lambda _user, _data: None), None)  # type: ignore[arg-type]
    need(all(hasattr(router, name) for name in ("_lock", "decoders", "reader", "sink", "waiter", "_do_run",
                                                 "_end_thread", "destroy_decoder")),
         "voice_recv PacketRouter attributes _lock/decoders/reader/sink/waiter/_do_run/_end_thread/destroy_decoder")
    need("destroy_decoder(ssrc)" in source(voice_recv_hook), "voice_recv hook destroys the decoder on op 13")
    need(hasattr(PacketDecoder, "_decode_packet") and "self._decoder" in source(PacketDecoder.__init__),
         "voice_recv PacketDecoder._decode_packet and ._decoder")
    reader_init = source(AudioReader.__init__)
    need(all(f"self.{name}" in reader_init for name in ("packet_router", "keepalive", "decryptor", "voice_client")),
         "voice_recv AudioReader attributes packet_router/keepalive/decryptor/voice_client")
    need("self.error" in reader_init, "voice_recv AudioReader.error (the router records why it died)")
    need("self.speaking_timer" in reader_init and hasattr(SpeakingTimer, "drop_ssrc"),
         "voice_recv AudioReader.speaking_timer.drop_ssrc (VoiceRecvClient._remove_ssrc on op 13)")
    need("self.packet_router.feed_rtp(" in source(AudioReader.callback), "voice_recv AudioReader.callback → feed_rtp")
    need("self.decrypt_rtp" in source(PacketDecryptor.__init__), "voice_recv PacketDecryptor.decrypt_rtp per instance")
    need(hasattr(UDPKeepAlive, "delay"), "voice_recv UDPKeepAlive.delay")
    need({"padding", "decrypted_data", "ssrc"} <= set(vr_rtp.RTPPacket.__slots__) and hasattr(vr_rtp, "is_rtcp"),
         "voice_recv RTPPacket.padding/decrypted_data/ssrc and rtp.is_rtcp")
    client_init = source(voice_recv.VoiceRecvClient.__init__)
    need(all(f"self.{name}" in client_init for name in ("_reader", "_ssrc_to_id", "_id_to_ssrc"))
         and all(hasattr(voice_recv.VoiceRecvClient, name) for name in ("_get_id_from_ssrc", "_add_ssrc",
                                                                         "_remove_ssrc")),
         "voice_recv VoiceRecvClient._reader/_ssrc_to_id/_id_to_ssrc/_get_id_from_ssrc/_add_ssrc/_remove_ssrc")
    need('dispatch("voice_member_disconnect"' in source(voice_recv_hook) and hasattr(voice_recv.AudioSink, "listener"),
         "voice_recv dispatches voice_member_disconnect to sink listeners on op 13 (TutorSink frees the kid's stream)")
    need(inspect.iscoroutinefunction(voice_recv_hook), "voice_recv gateway hook coroutine")
    need("self.create_connection_state()" in source(discord.VoiceClient.__init__),
         "discord.py VoiceClient.__init__ builds its state with create_connection_state() (the shim's resume, "
         "UDP reader and guarded hook live there)")
    need("hook" in inspect.signature(VoiceConnectionState.__init__).parameters,
         "discord.py VoiceConnectionState(hook=)")
    state_init = source(VoiceConnectionState.__init__)
    need(all(f"self.{name}" in state_init for name in ("dave_session", "dave_protocol_version", "dave_downgraded")),
         "discord.py vc._connection.dave_session / dave_protocol_version / dave_downgraded")
    need("self.dave_downgraded = False" in source(getattr(VoiceConnectionState, "_execute_transition", None)),
         "discord.py clears dave_downgraded only when an upgrade's op 22 executes")
    need("self._runner" in state_init, "discord.py vc._connection._runner (voice websocket poller task)")
    need(all(f"self.{name}" in state_init for name in ("token", "session_id", "secret_key", "ws"))
         and "self._socket_reader = SocketReader(self)" in state_init,
         "discord.py vc._connection.token/session_id/secret_key/ws and its SocketReader(self)")
    reader_run = source(getattr(SocketReader, "_do_run", None))
    need(all(f"self.{name}" in reader_run for name in ("_end", "_running", "_callbacks", "state.socket")),
         "discord.py SocketReader._do_run over state.socket/_callbacks/_running/_end")
    need(list(inspect.signature(VoiceConnectionState._connect).parameters)
         == ["self", "reconnect", "timeout", "self_deaf", "self_mute", "resume"]
         and "resume=True" in source(getattr(VoiceConnectionState, "_poll_voice_ws", None))
         and "cleanup" in inspect.signature(VoiceConnectionState.disconnect).parameters,
         "discord.py VoiceConnectionState._connect(..., resume) called with resume=True on 4015, disconnect(cleanup=)")
    need({"resume", "hook", "seq_ack"} <= set(inspect.signature(DiscordVoiceWebSocket.from_connection_state).parameters)
         and all(hasattr(DiscordVoiceWebSocket, name) for name in ("READY", "RESUMED", "poll_event", "close"))
         and all(f"self.{name}" in source(DiscordVoiceWebSocket.__init__) for name in ("seq_ack", "secret_key")),
         "discord.py DiscordVoiceWebSocket.from_connection_state(resume, hook, seq_ack), RESUMED, seq_ack")
    need(hasattr(AudioReader, "_is_ip_discovery_packet"), "voice_recv AudioReader._is_ip_discovery_packet")
    need("self._hook(self, msg)" in source(DiscordVoiceWebSocket.received_message),
         "discord.py awaits the hook in DiscordVoiceWebSocket.received_message")
    need(all(hasattr(davey.DaveSession, name) for name in ("decrypt", "status"))
         and hasattr(davey.MediaType, "audio")
         and all(hasattr(davey.SessionStatus, name) for name in ("pending", "awaiting_response")),
         "davey DaveSession.decrypt/status, MediaType.audio, SessionStatus.pending/awaiting_response")
    return problems
