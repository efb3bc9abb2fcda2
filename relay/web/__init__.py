"""The admin listener's web side: task cards, live events, the health strip, and the guards in front of them."""
