"""The correlation registry: every kind of dealer randomness, by fixed name.

Dealer and parties look kinds up here by the name in the plan (never by attribute name
from the wire). Protocols that need new randomness (comparison, FSS keys) add their kinds
to this dict under a new fixed key.
"""
from __future__ import annotations

from privit.parties.session import CorrelationKind
from privit.protocols.binary import AdderGate
from privit.protocols.bit_select import BitSelect
from privit.protocols.correlations import arithmetic_kinds
from privit.protocols.fss_correlations import fss_kinds
from privit.protocols.owner_matmul import owner_kinds
from privit.protocols.products import product_kinds
from privit.protocols.truncation import TruncWrap

CORRELATIONS: dict[str, CorrelationKind] = {
    **arithmetic_kinds(),  # triple, square, matmul_triple, trunc_pair, rand_bits,
                           # fixed_mask, fixed_matmul_triple
    **owner_kinds(),  # owner_mask, owner_matmul_triple (one-sided products)
    **fss_kinds(),  # drelu_fss, relu_fss, drelu_bit_fss (comparison keys)
    AdderGate.name: AdderGate(),  # adder_gate (binary comparison, protocols/binary.py)
    TruncWrap.name: TruncWrap(),  # trunc_wrap (exact 2-party truncation, protocols/truncation.py)
    BitSelect.name: BitSelect(),  # bit_select (XOR bits times a value, protocols/bit_select.py)
    **product_kinds(),  # bcast_triple (broadcast Beaver products, protocols/products.py)
}
