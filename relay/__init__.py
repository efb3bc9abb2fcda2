"""relay: the home-lab end of asynchronous music-generation callbacks."""

__version__ = "0.1.0"
