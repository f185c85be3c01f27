"""The consumer hasher remembers recent digests: the same digests, within a bound."""

from __future__ import annotations

import hashlib
import hmac

from npv_guard.store import RECENT_DIGESTS, ConsumerHasher


def test_remembered_digests_are_the_keyed_hashes() -> None:
    hasher = ConsumerHasher("a-secret-of-enough-length-0123456789")
    numbers = [f"+3361234{i:04d}" for i in range(RECENT_DIGESTS + 50)]
    for _ in range(2):  # computed, then (for most) remembered
        for number in numbers:
            expected = hmac.new(b"a-secret-of-enough-length-0123456789", number.encode(), hashlib.sha256).hexdigest()
            assert hasher.digest(number) == expected[:32]
    assert len(hasher._recent) <= RECENT_DIGESTS


def test_the_previous_secrets_are_not_mixed_in() -> None:
    hasher = ConsumerHasher("new-secret-0123456789abcdef", previous=["old-secret-0123456789abcdef"])
    assert hasher.digest("+33612345678") != hasher.previous_digests("+33612345678")[0]
    assert hasher.digest("+33612345678") == ConsumerHasher("new-secret-0123456789abcdef").digest("+33612345678")
