"""What the provider family's callback codes mean: a sentence for alert bodies, a few words for titles."""

from __future__ import annotations

#: The seed's table, plus the codes the other callback pages use.
CODE_MEANINGS = {
    400: "parameter error, unsupported audio format or content violation",
    401: "unauthorized: the API key is invalid",
    404: "wrong request method or path",
    405: "rate limit exceeded",
    408: "timed out",
    409: "conflict: the task was already processed",
    413: "prompt too long, or the audio matches existing artwork",
    429: "insufficient credits",
    430: "calls too frequent",
    451: "the source audio could not be downloaded",
    455: "the service is under maintenance",
    500: "server error, try again later",
    501: "generation failed",
    531: "generation failed; credits were refunded, try again",
}

#: The same in at most 24 characters, so a title keeps the task id and the reason within ~60.
SHORT_MEANINGS = {
    400: "bad input or content",
    401: "API key invalid",
    404: "wrong method or path",
    405: "rate limited",
    408: "timed out",
    409: "already processed",
    413: "prompt too long",
    429: "out of credits",
    430: "calls too frequent",
    451: "source audio unreachable",
    455: "under maintenance",
    500: "server error",
    501: "generation failed",
    531: "failed, credits refunded",
}


def meaning(code: int | None) -> str | None:
    """The sentence for `code`, or None when the family does not define it."""
    return CODE_MEANINGS.get(code) if code is not None else None


def short_meaning(code: int | None) -> str | None:
    """A few words for `code`, or None."""
    return SHORT_MEANINGS.get(code) if code is not None else None
