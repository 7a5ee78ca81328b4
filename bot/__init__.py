"""Discord voice tutor for kids on the Gemini Live API. The core: no slash commands in here."""
