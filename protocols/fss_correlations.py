"""Dealer material for the FSS comparisons: `drelu_fss` (DReLU), `relu_fss` (the
one-round ReLU gate) and `drelu_bit_fss` (DReLU in XOR shares on the compact bit DCF of
dcf_bit.py). Two parties only (a DCF key pair has two halves).

What travels, per element (n = bits; the DCF has n - 1 levels):
- every random value a party can derive is drawn from the PRG it shares with the dealer
  (Prg(seed_i, request index), parties/offline.py): its root seed, its share of each
  mask, and party 0's share of every derived value;
- the correction words (CWs) are the same in both keys and depend on both root seeds,
  so they travel to BOTH parties;
- party 1 also receives its share of each derived value (value - party 0's share).

| kind, params | party 0 receives | party 1 receives | total B/elem |
|---|---|---|---|
| drelu_fss (M, n) | CWs: 24(n-1) + 8 | CWs + MSB(r) share: 24(n-1) + 16 | 48 n - 24 |
| relu_fss (M, n, shared) | CWs: 32(n-1) + 16 | CWs + MSB(r), R MSB(r): 32(n-1) + 32 | 64 n - 16 |
| drelu_bit_fss (M, n) | CWs: c(n-1) | CWs + MSB(r) bits: c(n-1) + 1/8 | 2 c(n-1) + 1/8 |

c(n) = dcf_bit.bit_dcf_cw_bytes(n) = 16 L + ceil(L/8) + max(1, 2^nu/8), L = n - min(7, n).
n = 64: drelu 3048 B, relu 4080 B; n = 32: drelu 1512, relu 2032, drelu_bit 806.
n = 24: drelu 1128, relu 1520, drelu_bit 548 (274 per party). `dealt_bytes` gives each
party's bytes by component; tests/test_fss_key_bytes.py pins them against `deal()`.

Draw order (dealer and party must agree), per party:
- drelu_fss: party 0: r share (8 M B), MSB(r) share (8 M), root seed (16 M);
  party 1: r share, root seed. r = r_0 + r_1 mod 2^n.
- drelu_bit_fss: party 0: r share (8 M), MSB(r) bits (M bytes, low bit), root seed (16 M);
  party 1: r share, root seed.
- relu_fss: party 0: R share (8 M), [r share (8 M) unless shared], MSB(r) share (8 M),
  R MSB(r) share (8 M), root seed (16 M); party 1: R share, [r share], root seed.
  R = R_0 + R_1 mod 2^64 masks the multiplicand; r = R when shared (n = 64 and the
  multiplicand is the comparison input: one opening), else r = r_0 + r_1 mod 2^n.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from privit.parties.prg import Prg
from privit.parties.session import Params
from privit.protocols.correlations import owned_tensor
from privit.protocols.dcf import DcfKeys, drelu_keygen
from privit.protocols.dcf_bit import BitDcfKeys, bit_dcf_cw_bytes, bit_dcf_keygen, leaf_bits
from privit.protocols.fss_prg import U64
from privit.protocols.relu_fss import PairDcfCorrections, relu_gate_keygen

RING_BITS = 64


def _params(params: Params, name: str) -> tuple[int, int]:
    if len(params) != 2 or not all(isinstance(p, int) and not isinstance(p, bool) for p in params):
        raise ValueError(f"{name}: params are (numel, bits), got {params!r}")
    numel, bits = int(params[0]), int(params[1])
    if numel < 0 or not 1 <= bits <= RING_BITS:
        raise ValueError(f"{name}: need numel >= 0 and 1 <= bits <= 64, got {params!r}")
    return numel, bits


def _gate_params(params: Params, name: str) -> tuple[int, int, bool]:
    if len(params) != 3:
        raise ValueError(f"{name}: params are (numel, bits, shared), got {params!r}")
    numel, bits = _params(params[:2], name)
    shared = params[2]
    if shared not in (0, 1) or isinstance(shared, bool) or (shared and bits != RING_BITS):
        raise ValueError(f"{name}: shared must be 0 or 1 (1 only with 64 bits), got {params!r}")
    return numel, bits, bool(shared)


def _two_parties(prgs: Sequence[object], name: str) -> None:
    if len(prgs) != 2:
        raise NotImplementedError(f"{name}: FSS keys are dealt to exactly 2 parties, "
                                  f"not {len(prgs)} (use the adder path or 2 parties)")


def _u64(prg: Prg, count: int) -> np.ndarray:
    return prg.bytes(8 * count).view(U64)


def _low(bits: int) -> np.uint64:
    return np.uint64((1 << bits) - 1)



def _check(array: np.ndarray, dtype: np.dtype, shape: tuple[int, ...], what: str) -> None:
    if array.dtype != dtype or tuple(array.shape) != shape:
        raise ValueError(f"{what}: payload is {array.dtype}{list(array.shape)}, "
                         f"expected {dtype}{list(shape)}")


class _ReplaySource:
    """A RandomSource that hands out pre-drawn byte strings in order, checking each size,
    so that a keygen draws exactly the parties' PRG values (and fails loudly otherwise)."""

    def __init__(self, chunks: Sequence[np.ndarray]) -> None:
        self._chunks = list(chunks)

    def __call__(self, nbytes: int) -> bytes:
        if not self._chunks or self._chunks[0].nbytes != nbytes:
            raise RuntimeError("the keygen's random draws differ from the dealt PRG layout")
        return self._chunks.pop(0).tobytes()

    def done(self) -> None:
        if self._chunks:
            raise RuntimeError("the keygen drew fewer random values than the dealt PRG layout")


class DreluFss:
    """`drelu_fss`, params (numel, bits): material for dcf.drelu_eval on n = bits.

    Material (per party, numpy views as torch tensors): r_share, msb_share (uint64 (M,)),
    root_seed (M, 16) uint8, seed_cw (n-1, M, 16) uint8, value_cw (n-1, M), final_cw (M,).
    """

    name = "drelu_fss"

    def deal(self, params: Params, prgs: Sequence[Prg]) -> list[list[np.ndarray]]:
        numel, bits = _params(params, self.name)
        _two_parties(prgs, self.name)
        r0, msb0, root0 = _u64(prgs[0], numel), _u64(prgs[0], numel), prgs[0].bytes(16 * numel)
        r1, root1 = _u64(prgs[1], numel), prgs[1].bytes(16 * numel)
        source = _ReplaySource([r0, msb0, root0, root1])
        mat0, mat1 = drelu_keygen(numel, bits, source, mask=(r0 + r1) & _low(bits))
        source.done()
        cws = list(mat0.dcf.to_buffers()[1:])
        return [cws, [*cws, mat1.msb_share]]

    def expand(self, params: Params, party: int, n_parties: int, prg: Prg,
               payload: Sequence[np.ndarray]) -> dict[str, torch.Tensor]:
        numel, bits = _params(params, self.name)
        if n_parties != 2:
            raise NotImplementedError(f"{self.name}: 2 parties only")
        r = _u64(prg, numel)
        msb = _u64(prg, numel) if party == 0 else None
        root = prg.bytes(16 * numel).reshape(numel, 16)
        if len(payload) != (3 if party == 0 else 4):
            raise ValueError(f"{self.name}: {len(payload)} payload arrays for party {party}")
        levels = bits - 1
        _check(payload[0], np.dtype(np.uint8), (levels, numel, 16), "seed_cw")
        _check(payload[1], U64, (levels, numel), "value_cw")
        _check(payload[2], U64, (numel,), "final_cw")
        if party == 1:
            _check(payload[3], U64, (numel,), "msb_share")
            msb = payload[3]
        assert msb is not None
        return {"r_share": owned_tensor(r), "msb_share": owned_tensor(msb),
                "root_seed": owned_tensor(root), "seed_cw": owned_tensor(payload[0]),
                "value_cw": owned_tensor(payload[1]), "final_cw": owned_tensor(payload[2])}

    def zeros(self, params: Params) -> dict[str, torch.Tensor]:
        _params(params, self.name)
        return {}  # tracing never evaluates (compare.py returns zeros when tracing)


def drelu_dcf_keys(material: dict[str, torch.Tensor]) -> DcfKeys:
    """The DcfKeys inside `drelu_fss` material (zero-copy numpy views)."""
    return DcfKeys(material["root_seed"].numpy(), material["seed_cw"].numpy(),
                   material["value_cw"].numpy(), material["final_cw"].numpy())


class ReluFss:
    """`relu_fss`, params (numel, bits): the one-round ReLU gate (relu_fss.py).

    Material: big_r_share (R, uint64 (M,)), r_share (n < 64 only), msb_share, r_msb_share,
    root_seed (M, 16) uint8 and the pair DCF's seed_cw, value_cw, final_cw.
    """

    name = "relu_fss"

    def deal(self, params: Params, prgs: Sequence[Prg]) -> list[list[np.ndarray]]:
        numel, bits, shared = _gate_params(params, self.name)
        _two_parties(prgs, self.name)
        draws = [self._draw(prg, party, numel, shared) for party, prg in enumerate(prgs)]
        big_r = draws[0]["big_r_share"] + draws[1]["big_r_share"]
        r = big_r if shared else (draws[0]["r_share"] + draws[1]["r_share"]) & _low(bits)
        roots = (draws[0]["root"].view(U64).reshape(numel, 2),
                 draws[1]["root"].view(U64).reshape(numel, 2))
        values = relu_gate_keygen(bits, r, big_r, roots)
        cws = list(values.corrections.to_buffers())
        corrections = [values.msb - draws[0]["msb_share"], values.r_msb - draws[0]["r_msb_share"]]
        return [cws, [*cws, *corrections]]

    @staticmethod
    def _draw(prg: Prg, party: int, numel: int, shared: bool) -> dict[str, np.ndarray]:
        out = {"big_r_share": _u64(prg, numel)}
        if not shared:
            out["r_share"] = _u64(prg, numel)
        if party == 0:
            out["msb_share"] = _u64(prg, numel)
            out["r_msb_share"] = _u64(prg, numel)
        out["root"] = prg.bytes(16 * numel)
        return out

    def expand(self, params: Params, party: int, n_parties: int, prg: Prg,
               payload: Sequence[np.ndarray]) -> dict[str, torch.Tensor]:
        numel, bits, shared = _gate_params(params, self.name)
        if n_parties != 2:
            raise NotImplementedError(f"{self.name}: 2 parties only")
        drawn = self._draw(prg, party, numel, shared)
        if len(payload) != (3 if party == 0 else 5):
            raise ValueError(f"{self.name}: {len(payload)} payload arrays for party {party}")
        levels = bits - 1
        _check(payload[0], np.dtype(np.uint8), (levels, numel, 16), "seed_cw")
        _check(payload[1], U64, (levels, numel, 2), "value_cw")
        _check(payload[2], U64, (numel, 2), "final_cw")
        if party == 1:
            _check(payload[3], U64, (numel,), "msb_share")
            _check(payload[4], U64, (numel,), "r_msb_share")
            drawn["msb_share"], drawn["r_msb_share"] = payload[3], payload[4]
        out = {name: owned_tensor(value) for name, value in drawn.items() if name != "root"}
        out["root_seed"] = owned_tensor(drawn["root"].reshape(numel, 16))
        for name, value in zip(("seed_cw", "value_cw", "final_cw"), payload[:3], strict=True):
            out[name] = owned_tensor(value)
        return out

    def zeros(self, params: Params) -> dict[str, torch.Tensor]:
        _gate_params(params, self.name)
        return {}


def relu_corrections(material: dict[str, torch.Tensor]) -> PairDcfCorrections:
    """The pair DCF's correction words inside `relu_fss` material (zero-copy views)."""
    return PairDcfCorrections(material["seed_cw"].numpy(), material["value_cw"].numpy(),
                              material["final_cw"].numpy())


class DreluBitFss:
    """`drelu_bit_fss`, params (numel, bits): material for dcf_bit.bit_drelu_eval on n = bits
    (XOR shares of DReLU; a consumer converts them, e.g. in its next product's opening).

    Material (per party): r_share uint64 (M,), msb_share uint8 (M,) (0/1), root_seed
    (M, 16) uint8, seed_cw (L, M, 16), value_cw (M, ceil(L/8)), leaf_cw (M, leaf bytes)
    uint8 with L = n - 1 - min(7, n - 1). Party 1's MSB(r) bits travel packed, 8 per byte.
    """

    name = "drelu_bit_fss"

    def deal(self, params: Params, prgs: Sequence[Prg]) -> list[list[np.ndarray]]:
        numel, bits = _params(params, self.name)
        _two_parties(prgs, self.name)
        draws = [self._draw(prg, party, numel) for party, prg in enumerate(prgs)]
        r = (draws[0]["r_share"] + draws[1]["r_share"]) & _low(bits)
        msb = (r >> np.uint64(bits - 1)).astype(np.uint8)
        roots = (draws[0]["root"].view(U64).reshape(numel, 2),
                 draws[1]["root"].view(U64).reshape(numel, 2))
        keys, _ = bit_dcf_keygen(r & _low(bits - 1), bits - 1, roots=roots)
        cws = list(keys.corrections())
        msb1 = np.packbits(msb ^ draws[0]["msb_share"], bitorder="little")
        return [cws, [*cws, msb1]]

    @staticmethod
    def _draw(prg: Prg, party: int, numel: int) -> dict[str, np.ndarray]:
        out = {"r_share": _u64(prg, numel)}
        if party == 0:
            out["msb_share"] = prg.bytes(numel) & np.uint8(1)
        out["root"] = prg.bytes(16 * numel)
        return out

    def expand(self, params: Params, party: int, n_parties: int, prg: Prg,
               payload: Sequence[np.ndarray]) -> dict[str, torch.Tensor]:
        numel, bits = _params(params, self.name)
        if n_parties != 2:
            raise NotImplementedError(f"{self.name}: 2 parties only")
        drawn = self._draw(prg, party, numel)
        if len(payload) != (3 if party == 0 else 4):
            raise ValueError(f"{self.name}: {len(payload)} payload arrays for party {party}")
        if party == 1:
            _check(payload[3], np.dtype(np.uint8), (-(-numel // 8),), "msb_share")
            drawn["msb_share"] = np.unpackbits(payload[3], count=numel, bitorder="little")
        root = drawn.pop("root").reshape(numel, 16)
        # BitDcfKeys checks every CW's dtype and shape against (numel, bits - 1)
        keys = BitDcfKeys.from_buffers(bits - 1, [root, *payload[:3]])
        out = {name: owned_tensor(value) for name, value in drawn.items()}
        for name, value in zip(("root_seed", "seed_cw", "value_cw", "leaf_cw"), keys.to_buffers(),
                               strict=True):
            out[name] = owned_tensor(value)
        return out

    def zeros(self, params: Params) -> dict[str, torch.Tensor]:
        _params(params, self.name)
        return {}


def bit_dcf_keys(material: dict[str, torch.Tensor], bits: int) -> BitDcfKeys:
    """The BitDcfKeys inside `drelu_bit_fss` material of n = bits (zero-copy views)."""
    return BitDcfKeys(material["root_seed"].numpy(), material["seed_cw"].numpy(),
                      material["value_cw"].numpy(), material["leaf_cw"].numpy(), n_bits=bits - 1)


def dealt_bytes(kind: str, numel: int, bits: int) -> tuple[dict[str, int], dict[str, int]]:
    """What the dealer sends party 0 and party 1 for one request, by component (payload
    bytes, headers excluded). Everything else of the material is derived from the PRGs."""
    levels = bits - 1
    if kind == "drelu_fss":
        cws = {"seed_cw": 16 * levels * numel, "value_cw": 8 * levels * numel,
               "final_cw": 8 * numel}
        return cws, {**cws, "msb_share": 8 * numel}
    if kind == "relu_fss":
        cws = {"seed_cw": 16 * levels * numel, "value_cw": 16 * levels * numel,
               "final_cw": 16 * numel}
        return cws, {**cws, "msb_share": 8 * numel, "r_msb_share": 8 * numel}
    if kind == "drelu_bit_fss":
        tree = levels - leaf_bits(levels)
        cws = {"seed_cw": 16 * tree * numel, "value_cw": -(-tree // 8) * numel,
               "leaf_cw": (bit_dcf_cw_bytes(levels) - 16 * tree - -(-tree // 8)) * numel}
        return cws, {**cws, "msb_share": -(-numel // 8)}
    raise ValueError(f"unknown FSS kind {kind!r}")


FssKind = DreluFss | ReluFss | DreluBitFss


def fss_kinds() -> dict[str, FssKind]:
    kinds: list[FssKind] = [DreluFss(), ReluFss(), DreluBitFss()]
    return {k.name: k for k in kinds}
