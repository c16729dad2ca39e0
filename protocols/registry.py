"""The correlation registry: every kind of dealer randomness, by fixed name.

Dealer and parties look kinds up here by the name in the plan (never by attribute name
from the wire). Protocols that need new randomness (comparison, FSS keys) add their kinds
to this dict under a new fixed key.
"""
from __future__ import annotations

from privit.parties.session import CorrelationKind
from privit.protocols.correlations import arithmetic_kinds

CORRELATIONS: dict[str, CorrelationKind] = {
    **arithmetic_kinds(),  # triple, square, matmul_triple, trunc_pair, rand_bits,
                           # fixed_mask, fixed_matmul_triple
}
