"""Audio stages between Discord voice and Gemini Live. Pure numpy/soxr; no Discord connection needed."""
