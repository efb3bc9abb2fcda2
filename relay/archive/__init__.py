"""Keeping the music: every file a delivery links to, downloaded safely into `archive.dir` before the link expires."""
