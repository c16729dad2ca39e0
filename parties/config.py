"""Typed run configuration shared by every process of one run.

launch/ builds a `RunConfig`; every party and the dealer receive the same one and
compare `config_hash()` in the handshake, so two processes that disagree on ring
size, fixed point, job or network stop at connect instead of computing garbage.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

RING_BITS = 64
MIN_FRAC_BITS = 8
MAX_FRAC_BITS = 24
PROTOCOL_VERSION = 5  # 2: CURVE channels, the bye; 3: streamed offline phase, hello window;
# 4: compact FSS keys (drelu_bit_fss, bit_select), adder requests split at 2^19, auto_objective;
# 5: exact two-party truncation (trunc_wrap), the default for 2 parties
CHANNEL_MODES = ("curve", "insecure")


@dataclass(frozen=True)
class NetworkConfig:
    """One-way latency and bandwidth applied to every link by the transport.

    `latency_s` is one-way (RTT / 2); `bandwidth_bps` is in bits per second, 0 means
    unlimited. Presets follow Cheetah's scripts (LAN 3 Gbit/s, 0.3 ms RTT; WAN
    400 Mbit/s, 40 ms RTT).
    """

    name: str = "none"
    latency_s: float = 0.0
    bandwidth_bps: float = 0.0

    @property
    def rtt_s(self) -> float:
        return 2.0 * self.latency_s

    @property
    def emulated(self) -> bool:
        return self.latency_s > 0 or self.bandwidth_bps > 0


NETWORK_PRESETS: dict[str, NetworkConfig] = {
    "none": NetworkConfig("none", 0.0, 0.0),
    "lan": NetworkConfig("lan", 0.15e-3, 3e9),
    "wan": NetworkConfig("wan", 20e-3, 400e6),
}


def network_from_options(
    preset: str, rtt_ms: float | None = None, bandwidth_mbps: float | None = None
) -> NetworkConfig:
    """A preset, optionally overridden by a custom RTT (ms) and bandwidth (Mbit/s)."""
    if preset not in NETWORK_PRESETS:
        raise ValueError(f"unknown network preset {preset!r}; choose from {sorted(NETWORK_PRESETS)}")
    net = NETWORK_PRESETS[preset]
    if rtt_ms is not None:
        if rtt_ms < 0:
            raise ValueError(f"RTT must be >= 0 ms, got {rtt_ms}")
        net = replace(net, name="custom", latency_s=rtt_ms / 2e3)
    if bandwidth_mbps is not None:
        if bandwidth_mbps < 0:
            raise ValueError(f"bandwidth must be >= 0 Mbit/s, got {bandwidth_mbps}")
        net = replace(net, name="custom", bandwidth_bps=bandwidth_mbps * 1e6)
    return net


@dataclass(frozen=True)
class JobSpec:
    """Which job the parties run and its parameters (plain JSON-able values only)."""

    name: str
    params: tuple[tuple[str, Any], ...] = ()

    def param(self, key: str, default: Any = None) -> Any:
        return dict(self.params).get(key, default)

    @staticmethod
    def make(name: str, **params: Any) -> JobSpec:
        return JobSpec(name, tuple(sorted(params.items())))


AUTO_OBJECTIVES = ("whole", "online")
# The vit job's precision levels (its `precision` parameter; models/private_options.py and
# protocols/approx_config.precision_configs hold their approximations): the fractional bits
# each runs with unless the config names them.
PRECISION_FRAC_BITS = {"default": 16, "precise": 20}
FROM_PRECISION = 0  # RunConfig.frac_bits' default: the job's precision level's bits
TRUNCATIONS = ("exact", "local", "dealer")  # protocols/truncation.py


def precision_truncation(precision: str, n_parties: int) -> str:
    """What truncation "auto" means: exact (the local shift plus its wrap bit, 1 round of
    1 bit per element) for 2 parties, the dealer's pairs otherwise; at any precision.

    Local truncation (SecureML, 0 rounds) is only used when named: it fails (off by
    2^(64 - 2f) in real units) with probability |x| 2^(2f - 64) per truncated product of
    real magnitude |x|, summed over a run 2.3e-4 for vit_digits, 2.5e-3 for the teacher and
    7.2e-2 for ViT-Base (docs/arithmetic.md section 5), 4x more often per extra bit of f;
    so a config that names it with precision "precise" is refused (RunConfig)."""
    del precision  # every precision level truncates the same way since the exact method
    return "exact" if n_parties == 2 else "dealer"


@dataclass(frozen=True)
class RunConfig:
    """Everything the processes of one run must agree on.

    frac_bits: fixed-point fractional bits f, valid range [MIN_FRAC_BITS, MAX_FRAC_BITS].
      With f = 16 a value's magnitude must stay below 2^(63-2f) = 2^31 before a product
      is truncated (products carry 2f fractional bits), and the resolution is 2^-16.
      Default (FROM_PRECISION): the bits of the job's `precision` parameter (vit;
      PRECISION_FRAC_BITS: 16, or 20 for "precise").
    truncation: "exact" (2 parties: 1 round of 1 bit per element, exact up to one LSB),
      "dealer" (1 round of 8 bytes per element, exact up to one LSB, any n) or "local"
      (SecureML, 0 rounds, 2 parties only, fails with probability about |x| / 2^64 per
      element); "auto" (the default): `precision_truncation` (exact for 2 parties, dealer
      otherwise). Local truncation with precision "precise" is refused (too likely to fail
      at its f).
    Both defaults are resolved when the config is built, so `to_dict` and the handshake's
    hash carry the values the run uses (a `dataclasses.replace` keeps them as resolved).
    channels: "curve" (every link authenticated and encrypted, the default) or
      "insecure" (plain TCP, for measurements only).
    max_frame_mb / max_buffer_mb: the channel's bounds (parties/channel.ChannelLimits).
    timeout_s: how long a peer may be silent -- no message and no live link, or a link
      that answers no heartbeat -- before a wait for it fails. A peer whose link is alive
      is working and is waited for (parties/channel.py).
    max_wait_s: the cap on one wait for a peer that is alive but never sends (a
      deadlock); generous, since a peer may compute for long.
    memory_budget_mb: the resident memory a party may use; the dealer's material streams
      within it (parties/offline.StreamLimits.for_budget).
    Both timeouts and the budget are this process's own: not part of the handshake's hash.
    auto_objective: what comparisons' method "auto" minimises (protocols/cost_model.py):
      "whole" (the run: online phase, plus the dealer's key generation and material
      transfer) or "online" (the online phase only: for material dealt ahead of time).
    """

    n_parties: int = 2
    frac_bits: int = FROM_PRECISION
    truncation: str = "auto"
    job: JobSpec = field(default_factory=lambda: JobSpec("matmul_chain"))
    network: NetworkConfig = field(default_factory=NetworkConfig)
    timeout_s: float = 60.0
    max_wait_s: float = 3600.0
    session_id: str = "local"
    seed: int = 0
    channels: str = "curve"
    max_frame_mb: int = 1024
    max_buffer_mb: int = 2048
    memory_budget_mb: int = 2048
    auto_objective: str = "whole"

    def __post_init__(self) -> None:
        if self.auto_objective not in AUTO_OBJECTIVES:
            raise ValueError(f"auto_objective must be one of {AUTO_OBJECTIVES}, "
                             f"got {self.auto_objective!r}")
        if self.channels not in CHANNEL_MODES:
            raise ValueError(f"channels must be one of {CHANNEL_MODES}, got {self.channels!r}")
        if self.max_frame_mb < 1 or self.max_buffer_mb < 1:
            raise ValueError("max_frame_mb and max_buffer_mb must be >= 1")
        if self.memory_budget_mb < 64:
            raise ValueError(f"memory_budget_mb must be >= 64, got {self.memory_budget_mb}")
        if self.n_parties < 2:
            raise ValueError(f"need at least 2 parties, got {self.n_parties}")
        precision = self.job.param("precision", "default")
        if precision not in PRECISION_FRAC_BITS:
            raise ValueError(f"precision must be one of {', '.join(PRECISION_FRAC_BITS)}, "
                             f"got {precision!r}")
        if self.frac_bits == FROM_PRECISION:
            object.__setattr__(self, "frac_bits", PRECISION_FRAC_BITS[precision])
        if self.truncation == "auto":
            object.__setattr__(self, "truncation", precision_truncation(precision, self.n_parties))
        if not MIN_FRAC_BITS <= self.frac_bits <= MAX_FRAC_BITS:
            raise ValueError(
                f"frac_bits must be in [{MIN_FRAC_BITS}, {MAX_FRAC_BITS}], got {self.frac_bits}"
            )
        if self.truncation not in TRUNCATIONS:
            raise ValueError(f"truncation must be one of auto, {', '.join(TRUNCATIONS)}, "
                             f"got {self.truncation!r}")
        if self.truncation == "exact" and self.n_parties != 2:
            raise ValueError("exact truncation is for 2 parties; use 'dealer'")
        if self.truncation == "local" and self.n_parties != 2:
            raise ValueError("local truncation is only correct for 2 parties; use 'dealer'")
        if self.truncation == "local" and precision == "precise":
            raise ValueError("local truncation is unsafe with precision precise (it fails with "
                             "probability |x| 2^(2f-64) per product, too often at f >= 18; "
                             "docs/nonlinear.md): use exact truncation (--truncation exact)")
        if self.timeout_s <= 0:
            raise ValueError(f"timeout must be > 0 s, got {self.timeout_s}")
        if self.max_wait_s <= 0:
            raise ValueError(f"max wait must be > 0 s, got {self.max_wait_s}")

    @property
    def ring_bits(self) -> int:
        return RING_BITS

    @property
    def dealer_id(self) -> int:
        """The dealer's role id: parties are 0..n-1, the dealer is n."""
        return self.n_parties

    @property
    def secure(self) -> bool:
        return self.channels == "curve"

    def role_name(self, role: int) -> str:
        return "dealer" if role == self.dealer_id else f"party {role}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["job"] = {"name": self.job.name, "params": dict(self.job.params)}
        return d

    @staticmethod
    def from_dict(d: dict[str, Any]) -> RunConfig:
        known = {"n_parties", "frac_bits", "truncation", "job", "network", "timeout_s",
                 "max_wait_s", "session_id", "seed", "channels", "max_frame_mb", "max_buffer_mb",
                 "memory_budget_mb", "auto_objective"}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown run-config fields: {sorted(unknown)}")
        d = dict(d)
        job = d.pop("job", {"name": "matmul_chain", "params": {}})
        net = d.pop("network", {})
        return RunConfig(
            job=JobSpec.make(job["name"], **job.get("params", {})),
            network=NetworkConfig(**net),
            **d,
        )

    def hash_fields(self) -> dict[str, Any]:
        """The fields the handshake compares (timeouts and budgets may differ per process)."""
        d = self.to_dict()
        d.pop("timeout_s")
        d.pop("max_wait_s")
        d.pop("memory_budget_mb")
        d["ring_bits"] = self.ring_bits
        d["protocol_version"] = PROTOCOL_VERSION
        return d

    def config_hash(self) -> str:
        blob = json.dumps(self.hash_fields(), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def flat_fields(d: Any, prefix: str = "") -> dict[str, Any]:
    """{"network": {"latency_s": 0}} -> {"network.latency_s": 0}: a config's fields by dotted
    name, to compare two configs field by field (the handshake, preprocessed material)."""
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for key, value in d.items():
        out.update(flat_fields(value, f"{prefix}.{key}" if prefix else str(key)))
    return out
