"""What a request id says: the client id an engine id was made from, the route it serves, the canary mark."""

from __future__ import annotations

# The request-id mark of ``kvwatch canary`` (it sends ``X-Request-Id: kvwatch-canary-<run>-<n>``):
# requests that carry it are counted apart from the server's own.
CANARY_MARK = "kvwatch-canary-"


def is_canary(request_id: str | None) -> bool:
    return request_id is not None and CANARY_MARK in request_id


_HEX = frozenset("0123456789abcdef")


def external_request_id(request_id: str) -> str | None:
    """The client-facing id an engine-internal id was made from, or None if it has no suffix.

    From vLLM 0.14.0 the engine appends ``-<8 hex>`` to the front end's id
    (``chatcmpl-<X>`` becomes ``chatcmpl-<X>-1a2b3c4d``); ``Received request``
    logs the first, ``Added request`` and every LMCache line the second.
    An id that merely ends in eight hex digits is indistinguishable, so callers
    join on the result only when the shorter id is already known."""
    if len(request_id) > 9 and request_id[-9] == "-" and _HEX.issuperset(request_id[-8:]):
        return request_id[:-9]
    return None


# The OpenAI front end's id prefix -> (GenAI operation name, the route it serves).
_ID_PREFIXES = (
    ("chatcmpl-", "chat", "/v1/chat/completions"),
    ("cmpl-", "text_completion", "/v1/completions"),
    ("embd-", "embeddings", "/v1/embeddings"),
)


def request_operation(request_id: str) -> tuple[str, str] | None:
    """``(operation, route)`` of a request, read from its id's prefix; None for other ids."""
    for prefix, operation, route in _ID_PREFIXES:
        if request_id.startswith(prefix):
            return operation, route
    return None
