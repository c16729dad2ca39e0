"""Costs of the comparison paths, exact (rounds, bytes) and estimated (seconds).

`fss_costs` and `adder_costs` give what a comparison sends, formula by formula from the
protocols (compare.py, binary.py); tests check them against the wire. `CostModel`
turns them into an estimated time for `method="auto"`, for each of the four paths
("fss": the one-round wide key; "fss_compact": the two-round bit key; "adder";
"adder_compact": the adder ending in XOR shares, then bit_select, one round more):

    T = compute(path, numel, bits) + bytes_per_party / bandwidth + rounds * latency
        + dealer(path)   (objective "whole": key generation + the busier dealer link)

with the session's network (sess.cfg.network), or, when the run emulates none, the
loopback constants below. Every round of both paths is a symmetric exchange (both
parties send, then both receive), so it waits one ONE-WAY latency (RTT / 2), which is
what the transport's emulation delivers (parties/netem.py; its `project_time` charges a
full RTT per round as an upper bound). Compute constants were measured on this 2-core machine with
`privit bench` (docs/comparison.md); pass your own `CostModel` (through
`compare.ComparisonConfig`) to re-tune them for another machine.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from privit.parties.config import NetworkConfig
from privit.protocols.binary_layout import leaf_widths, level_widths, packed_nbytes, positions
from privit.protocols.dcf_bit import bit_dcf_cw_bytes, leaf_bits

RING_BITS = 64
PATHS = ("fss", "fss_compact", "adder", "adder_compact")


def wire_itemsize(bits: int) -> int:
    """Bytes per element of an opened bits-bit value: uint8/16/32 or 64-bit words."""
    for size in (1, 2, 4):
        if bits <= 8 * size:
            return size
    return 8


@dataclass(frozen=True)
class OpCost:
    """rounds; online payload bytes sent by EACH party (headers excluded: one per message);
    messages per party; offline payload bytes from the dealer, all parties together, and
    on the dealer's busier link (the dealer has one link per party, used in parallel)."""

    rounds: int
    online_bytes: int
    messages: int
    offline_bytes: int
    offline_link_bytes: int


def fss_costs(numel: int, bits: int, product: bool, shared_mask: bool = True,
              compact: bool = False) -> OpCost:
    """The FSS path (compare.py), per call on `numel` elements; c = bit_dcf_cw_bytes(n - 1).

    DReLU: 1 round, wire_itemsize(bits) B per element per party; offline 48 n - 24 B
    (party 0: 24 n - 16, party 1: 24 n - 8), or with the compact bit keys
    (compare.drelu_xor, `compact`) c to each party + the packed MSB(r) bits to party 1.
    ReLU gate (product), wide key: 1 round; shared_mask (n = 64, the product of x with
    DReLU(x)): 8 B per element per party, else wire_itemsize(n) + 8; offline 64 n - 16 B
    (party 0: 32 n - 16, party 1: 32 n). Compact (`compact`): drelu_xor, then
    bit_select.bit_products (K = 1): 2 rounds, wire_itemsize(n) + ceil(N / 8) / N + 8 B per
    element per party; offline c to party 0, c + ceil(N / 8) / N + 16 to party 1.
    """
    msb_bits = -(-numel // 8)
    if compact:
        keys = numel * bit_dcf_cw_bytes(bits - 1)
        to_party1 = keys + msb_bits + (16 * numel if product else 0)
        if not product:
            return OpCost(1, numel * wire_itemsize(bits), 1, keys + to_party1, to_party1)
        online = numel * (wire_itemsize(bits) + 8) + msb_bits
        return OpCost(2, online, 2, keys + to_party1, to_party1)
    if not product:
        return OpCost(1, numel * wire_itemsize(bits), 1, numel * (48 * bits - 24),
                      numel * (24 * bits - 8))
    online = 8 if shared_mask else wire_itemsize(bits) + 8
    return OpCost(1, numel * online, 1, numel * (64 * bits - 16), numel * 32 * bits)


def fss_key_levels(bits: int, compact: bool) -> int:
    """DCF tree levels the dealer expands per element: bits - 1 for the wide keys (dcf.py,
    relu_fss.py); the compact key's tree on n = bits - 1 stops leaf_bits(n) levels early."""
    return bits - 1 - (leaf_bits(bits - 1) if compact else 0)


def adder_costs(numel: int, bits: int, product: bool, leaf: int = 2,
                compact: bool = False) -> OpCost:
    """The adder path (binary.py): P = positions, leaf blocks of `leaf` bits,
    rounds log2(P) - log2(leaf) + 1.

    Per party online: leaf 2^leaf - 1 values of P/leaf bits (+ 8 B for the product), each
    level of width w 3 values of w/2 bits, the final 3 bits; all bit-packed.
    Offline (party 1): the packed products (2 values per leaf and per level) and 7 (14)
    int64 truth-table shares.
    `compact` (binary.adder_drelu_xor, DReLU in XOR shares): the final round opens 2 bits
    (a Beaver AND) and the dealer sends 1 packed bit instead of the tables; with `product`
    (compare's "adder_compact" gate) bit_select.open_bits follows (K = 1): one round more,
    ceil(N / 8) + 8 N B per party online, 16 N B offline (party 1), and the leaf round
    sends no multiplicand.
    """
    lanes = positions(bits) // leaf
    widths = level_widths(bits, leaf)
    rounds = len(widths) + 2
    tree_online = packed_nbytes(((1 << leaf) - 1) * numel, lanes)
    tree_online += sum(packed_nbytes(3 * numel, w // 2) for w in widths)
    tree_offline = packed_nbytes(2 * numel, lanes) + sum(packed_nbytes(2 * numel, w // 2) for w in widths)
    if compact:
        online = tree_online + packed_nbytes(2 * numel, 1)
        offline = tree_offline + packed_nbytes(numel, 1)
        if product:
            rounds += 1
            online += packed_nbytes(numel, 1) + 8 * numel
            offline += 16 * numel
        return OpCost(rounds, online, rounds, offline, offline)  # all of it to party 1
    online = tree_online + (8 * numel if product else 0) + packed_nbytes(3 * numel, 1)
    offline = tree_offline + 8 * 7 * numel * (2 if product else 1)
    return OpCost(rounds, online, rounds, offline, offline)  # all of it to party 1


@dataclass(frozen=True)
class PathConstants:
    """Compute time of one call: per_call_s + per_round_s * rounds + numel * (per_elem_s
    + per_elem_level_s * levels); levels = DCF levels (bits - 1) on the FSS path, tree
    positions P on the adder path."""

    per_call_s: float
    per_round_s: float
    per_elem_s: float
    per_elem_level_s: float


@dataclass(frozen=True)
class CostModel:
    """Constants for `method="auto"` (seconds, bytes per second).

    objective "whole" (the default) estimates what a comparison adds to the whole run: the
    online phase, plus the dealer's work for it, generating FSS keys
    (fss_keygen_per_elem_level_s, or fss_bit_keygen_per_elem_level_s for the compact key,
    per element and DCF level, fss_key_levels) and sending the material over the dealer's
    links, one per party in parallel, so the busier link's bytes (OpCost.offline_link_bytes;
    the run's network: `--network` emulates the dealer links too). "online" counts the
    online phase only, for material made ahead of time (`privit preprocess`) when only the
    online latency matters. Under
    the WAN preset the difference decides: FSS saves ~5 rounds per comparison but its
    keys cost 1.5-4 KB per element on a 50 MB/s link.

    Measured on this 2-core VM by `python -m privit.launch.bench_ops_compare` (one party's
    local work, best of 5, M = 151,296; docs/comparison.md, "Cost model"): fss_drelu /
    fss_relu: the DCF evaluation dominates, 13 / 12 ns per element per level; fss_compact
    (bit DCF + bit_select, compare._gate_fss_compact): 15 ns per level and 76 ns per
    element (fss_drelu_bit: not measured, fss_drelu's); adder:
    22-36 ns per element plus 0.4 ns per tree position, 15-20 ns more with 4-bit leaves.
    per_call_s and the adder's
    per_round_s (message handling beyond the RTT) are fitted to `privit bench` walls.
    Loopback (no emulated network): 130 us round trip, 1.5 GB/s (bench_transport.py).
    """

    fss_drelu: PathConstants = PathConstants(1e-3, 0.0, 1.8e-8, 1.3e-8)
    fss_relu: PathConstants = PathConstants(1e-3, 0.0, 5.1e-8, 1.2e-8)
    fss_drelu_bit: PathConstants = PathConstants(1e-3, 0.0, 1.8e-8, 1.3e-8)
    fss_compact: PathConstants = PathConstants(2e-3, 0.0, 7.6e-8, 1.5e-8)
    adder: PathConstants = PathConstants(1e-3, 5e-4, 2.5e-8, 4e-10)
    # "adder_compact" gates: bit_select.open_bits after the XOR-ending adder, per element
    # beyond the table-ending gate's compute. Measured -15 to +3 ns (one party, M = 151,296,
    # 14 and 64 bits, best of 5, loaded VM): the conversion costs about what the table
    # lookups (np.take of two 8-entry tables) it replaces cost; hence 0.
    bit_select_per_elem_s: float = 0.0
    adder_leaf4_per_elem_s: float = 1.5e-8  # 4-bit leaves: 15 monomials per block to mask
    loopback_rtt_s: float = 130e-6
    loopback_bandwidth_Bps: float = 1.5e9
    # DCF key generation at the dealer: 227-262 ns per element and level measured with 2
    # other loads on the 2 cores (dcf.drelu_keygen, M = 151,296), about 100 ns alone.
    fss_keygen_per_elem_level_s: float = 1e-7
    # the bit DCF's keygen per level: indistinguishable from the wide key's under load
    # (0.6x and 1.6x of it in two runs, M = 151,296); its tree has leaf_bits fewer levels.
    fss_bit_keygen_per_elem_level_s: float = 1e-7
    objective: str = "whole"

    def __post_init__(self) -> None:
        if self.objective not in ("whole", "online"):
            raise ValueError(f"objective must be 'whole' or 'online', got {self.objective!r}")

    def network_terms(self, network: NetworkConfig) -> tuple[float, float]:
        """(seconds per exchange round = one-way latency, bandwidth in bytes/s) of the run,
        or the loopback constants."""
        if not network.emulated:
            return self.loopback_rtt_s / 2, self.loopback_bandwidth_Bps
        latency = network.latency_s if network.latency_s > 0 else self.loopback_rtt_s / 2
        bandwidth = network.bandwidth_bps / 8 if network.bandwidth_bps > 0 else math.inf
        return latency, bandwidth

    def compute_s(self, method: str, numel: int, bits: int, product: bool, leaf: int = 2,
                  compact: bool = False) -> float:
        """Local compute of one call; method "fss" with `compact` is "fss_compact", "adder"
        with `compact` "adder_compact"."""
        if method in ("fss", "fss_compact"):
            compact = compact or method == "fss_compact"
            if compact:
                c = self.fss_compact if product else self.fss_drelu_bit
            else:
                c = self.fss_relu if product else self.fss_drelu
            return c.per_call_s + c.per_round_s + numel * (
                c.per_elem_s + c.per_elem_level_s * fss_key_levels(bits, compact))
        if method in ("adder", "adder_compact"):
            compact = compact or method == "adder_compact"
            p = positions(bits)
            rounds = adder_costs(0, bits, product, leaf, compact).rounds
            c = self.adder
            extra = self.adder_leaf4_per_elem_s if leaf == 4 else 0.0
            if compact and product:
                extra += self.bit_select_per_elem_s
            return c.per_call_s + c.per_round_s * rounds + numel * (
                c.per_elem_s + c.per_elem_level_s * p + extra)
        raise ValueError(f"unknown comparison method {method!r}")

    def dealer_s(self, method: str, numel: int, bits: int, cost: OpCost,
                 bandwidth: float, compact: bool = False) -> float:
        """The dealer's share of the whole run for one call (0 for objective "online"):
        FSS key generation (fss_key_levels levels per element: the compact key's tree is
        shorter), and the material over the dealer's links, one per party, in parallel: the
        busier link's bytes (`cost.offline_link_bytes`; the adder's and the select's
        material all goes to party 1, party 0 derives its own from its seed)."""
        if self.objective == "online":
            return 0.0
        keygen = 0.0
        if method in ("fss", "fss_compact"):
            compact = compact or method == "fss_compact"
            per_level = (self.fss_bit_keygen_per_elem_level_s if compact
                         else self.fss_keygen_per_elem_level_s)
            keygen = per_level * numel * fss_key_levels(bits, compact)
        return keygen + cost.offline_link_bytes / bandwidth

    def costs(self, method: str, numel: int, bits: int, product: bool, shared_mask: bool = True,
              leaf: int = 2, compact: bool = False) -> OpCost:
        """The exact OpCost of `method` ("fss" with `compact` is "fss_compact", "adder"
        with `compact` "adder_compact")."""
        if method in ("adder", "adder_compact"):
            return adder_costs(numel, bits, product, leaf, compact or method == "adder_compact")
        if method not in ("fss", "fss_compact"):
            raise ValueError(f"unknown comparison method {method!r}")
        return fss_costs(numel, bits, product, shared_mask, compact or method == "fss_compact")

    def estimate_s(self, method: str, numels: Sequence[int], bits: int, product: bool,
                   network: NetworkConfig, shared_mask: bool = True, leaf: int | None = None,
                   compact: bool = False) -> float:
        """Estimated wall time of sequential calls on `numels` elements each (method of
        PATHS; adder: with the given leaf width, or the best one), with the dealer's share
        (`objective`)."""
        if method in ("adder", "adder_compact") and leaf is None:
            leaf = self.adder_leaf(numels, bits, product, network,
                                   compact or method == "adder_compact")
        latency, bandwidth = self.network_terms(network)
        total = 0.0
        for numel in numels:
            cost = self.costs(method, numel, bits, product, shared_mask, leaf or 2, compact)
            total += (self.compute_s(method, numel, bits, product, leaf or 2, compact)
                      + cost.online_bytes / bandwidth + cost.rounds * latency
                      + self.dealer_s(method, numel, bits, cost, bandwidth, compact))
        return total

    def adder_leaf(self, numels: Sequence[int], bits: int, product: bool,
                   network: NetworkConfig, compact: bool = False) -> int:
        """The adder's leaf width with the lower estimate: 4 saves a round for more bytes
        (2 on ties); `compact`: of the XOR-output variant ("adder_compact")."""
        return min(leaf_widths(bits), key=lambda w: (
            self.estimate_s("adder", numels, bits, product, network, leaf=w,
                            compact=compact), w))

    def choose(self, numels: Sequence[int], bits: int, product: bool, network: NetworkConfig,
               shared_mask: bool = True, compact: bool = False,
               paths: Sequence[str] = PATHS) -> str:
        """The path of `paths` with the lowest estimate (earlier in PATHS on ties).

        ReLU gates (product) weigh the wide key ("fss") against the compact one
        ("fss_compact") and the adder's table ending ("adder") against its XOR ending +
        bit_select ("adder_compact"); a DReLU has one variant per path, the XOR-output one
        when `compact` (GeLU's drelu_xor, whose consumer converts the bits), and "fss" and
        "adder" name them."""
        if not product:
            paths = [p for p in paths if p not in ("fss_compact", "adder_compact")] or ["fss"]
        return min(paths, key=lambda m: (
            self.estimate_s(m, numels, bits, product, network, shared_mask, compact=compact),
            PATHS.index(m)))


DEFAULT_COST_MODEL = CostModel()
