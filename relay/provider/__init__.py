"""The provider's side of the protocol: submitting tasks, polling their state, checking signed callbacks.

See ../shared/PROVIDER_API.md: `operations` (which submit path makes which kind, and where it is polled),
`client` (HTTP with the provider's envelope, errors and rate limit), `answers` (poll answers read into the fields
a callback gets), `signature` (kie.ai's webhook HMAC), `watchlist` and `watchdog` (tasks relay keeps an eye on).
"""
