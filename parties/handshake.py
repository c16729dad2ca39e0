"""The handshake every role runs first: agree on version, session and config; pass seeds.

Steps (counted in the 'setup' phase, one round):
1. Send a 'hello' to every peer. Its meta holds: version (PROTOCOL_VERSION), session
   (cfg.session_id), role (our role id), n_parties, config_hash (cfg.config_hash()),
   config (the JSON of cfg.hash_fields()), seed (16 bytes or nil) and public (a JSON
   object as text, or "": what the job lets this role announce, e.g. party 0's public
   architecture; never a secret) and window (in a party's hello to the dealer: the
   bytes of material the dealer may send it ahead of its reading, parties/offline.py,
   nil for no limit; nil in every other hello).
2. Receive the hello of every peer and check each field's type, then its value; the
   first disagreement raises `HandshakeError` naming the peer and the field. Both sides
   check, so both fail, each with its own one-line message.

Seeds (who sends a 16-byte seed to whom):
- the dealer sends party i its dealer seed seed_i (the dealer's correlated randomness
  for party i is derived from it, see parties/offline.py);
- party i sends a fresh pairwise seed to each party j > i (so each pair shares one seed,
  chosen by its lower-numbered member);
- parties send no seed to the dealer.
A hello that lacks an expected seed, or carries an unexpected one, is an error.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from privit.parties.channel import FramedChannel
from privit.parties.config import PROTOCOL_VERSION, RunConfig, flat_fields
from privit.parties.offline import MIN_WINDOW_BYTES
from privit.parties.prg import SEED_BYTES

# The hello's meta fields and their types.
HELLO_FIELDS: dict[str, tuple[type, ...]] = {
    "version": (int,), "session": (str,), "role": (int,), "n_parties": (int,),
    "config_hash": (str,), "config": (str,), "seed": (bytes, type(None)), "public": (str,),
    "window": (int, type(None)),
}
MAX_PUBLIC_CHARS = 1 << 15  # well inside the wire's header limit


class HandshakeError(RuntimeError):
    """Two roles of one run disagree; the text names the peer and what differs."""


def expects_seed(sender: int, receiver: int, dealer: int) -> bool:
    """Whether `sender`'s hello to `receiver` carries a seed (the convention above)."""
    if sender == dealer:
        return receiver != dealer
    return receiver != dealer and sender < receiver


def hello_meta(cfg: RunConfig, role: int, seed: bytes | None,
               public: dict[str, Any] | None = None, window: int | None = None) -> dict[str, Any]:
    text = "" if public is None else json.dumps(public, sort_keys=True, separators=(",", ":"))
    if len(text) > MAX_PUBLIC_CHARS:
        raise ValueError(f"{cfg.role_name(role)}'s public announcement is {len(text)} characters "
                         f"(max {MAX_PUBLIC_CHARS})")
    return {
        "version": PROTOCOL_VERSION,
        "session": cfg.session_id,
        "role": role,
        "n_parties": cfg.n_parties,
        "config_hash": cfg.config_hash(),
        "config": json.dumps(cfg.hash_fields(), sort_keys=True, default=str),
        "seed": seed,
        "public": text,
        "window": window,
    }


@dataclass(frozen=True)
class Hellos:
    """What the peers' hellos brought: seeds, public announcements and (to the dealer) the
    parties' windows, by peer."""

    seeds: dict[int, bytes]
    public: dict[int, dict[str, Any] | None]
    windows: dict[int, int]


def handshake(
    channel: FramedChannel,
    cfg: RunConfig,
    role: int,
    peers: Sequence[int],
    seeds_out: Mapping[int, bytes],
) -> dict[int, bytes]:
    """Run the handshake with every peer; returns the seeds received, by peer."""
    return exchange_hellos(channel, cfg, role, peers, seeds_out).seeds


def exchange_hellos(
    channel: FramedChannel,
    cfg: RunConfig,
    role: int,
    peers: Sequence[int],
    seeds_out: Mapping[int, bytes],
    public: dict[str, Any] | None = None,
    window: int | None = None,
) -> Hellos:
    """Run the handshake with every peer, announcing `public` (and to the dealer, a party's
    `window`); returns what they sent."""
    dealer = cfg.dealer_id
    for peer in peers:
        seed = seeds_out.get(peer)
        if expects_seed(role, peer, dealer) != (seed is not None):
            raise ValueError(
                f"{cfg.role_name(role)} must {'' if seed is None else 'not '}send a seed to "
                f"{cfg.role_name(peer)} (see the seed convention in parties/handshake.py)"
            )
        if seed is not None and len(seed) != SEED_BYTES:
            raise ValueError(
                f"seed for {cfg.role_name(peer)} has {len(seed)} bytes, not {SEED_BYTES}"
            )
    if window is not None and role == dealer:
        raise ValueError("the dealer grants no window; parties grant it one")
    for peer in peers:
        seed = seeds_out.get(peer)
        to_dealer = window if peer == dealer else None
        channel.send(peer, "hello", "hello", meta=hello_meta(cfg, role, seed, public, to_dealer))
    received: dict[int, bytes] = {}
    announced: dict[int, dict[str, Any] | None] = {}
    windows: dict[int, int] = {}
    for peer in peers:
        msg = channel.recv(peer, "hello", "hello")
        seed = check_hello(msg.meta, cfg, role, peer)
        if seed is not None:
            received[peer] = seed
        meta = msg.meta if isinstance(msg.meta, dict) else {}  # check_hello vetted it
        announced[peer] = _public_of(str(meta.get("public", "")), cfg.role_name(peer))
        if isinstance(meta.get("window"), int):
            windows[peer] = meta["window"]
    return Hellos(received, announced, windows)


def _public_of(text: str, who: str) -> dict[str, Any] | None:
    if not text:
        return None
    if len(text) > MAX_PUBLIC_CHARS:
        raise HandshakeError(f"bad hello from {who}: 'public' is {len(text)} characters")
    return _json_object(text, who, "public")


def _json_object(text: str, who: str, field: str) -> dict[str, Any]:
    """The JSON object in a hello field; anything else is a HandshakeError naming it."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):  # JSONDecodeError is a ValueError; nesting bombs
        raise HandshakeError(f"bad hello from {who}: field {field!r} is not JSON") from None
    if not isinstance(value, dict):
        raise HandshakeError(f"bad hello from {who}: field {field!r} is not a JSON object")
    return value


def check_hello(meta: Any, cfg: RunConfig, role: int, peer: int) -> bytes | None:
    """Validate one peer's hello against ours; returns its seed (None if it sent none)."""
    who = cfg.role_name(peer)
    if not isinstance(meta, dict):
        raise HandshakeError(f"bad hello from {who}: no handshake fields")
    # The version first: a different version may legitimately have other fields.
    version = meta.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise HandshakeError(f"bad hello from {who}: field 'version' is {version!r:.40}")
    if version != PROTOCOL_VERSION:
        raise HandshakeError(
            f"protocol version mismatch with {who}: {PROTOCOL_VERSION} here, {version} there"
        )
    missing = [f for f in HELLO_FIELDS if f not in meta]
    extra = sorted(set(meta) - set(HELLO_FIELDS))
    if missing or extra:
        raise HandshakeError(
            f"bad hello from {who}: missing fields {missing}, unknown fields {extra}"
        )
    for name, types in HELLO_FIELDS.items():
        value = meta[name]
        if not isinstance(value, types) or isinstance(value, bool):
            raise HandshakeError(
                f"bad hello from {who}: field {name!r} has type {type(value).__name__}"
            )
    if meta["role"] != peer:
        raise HandshakeError(f"{who} claims to be role {meta['role']}")
    if meta["session"] != cfg.session_id:
        raise HandshakeError(
            f"session id mismatch with {who}: {cfg.session_id!r} here, {meta['session']!r} there"
        )
    if meta["n_parties"] != cfg.n_parties:
        raise HandshakeError(
            f"n_parties mismatch with {who}: {cfg.n_parties} here, {meta['n_parties']} there"
        )
    _compare_config(meta["config"], meta["config_hash"], cfg, who)
    seed = meta["seed"]
    expected = expects_seed(peer, role, cfg.dealer_id)
    if expected and seed is None:
        raise HandshakeError(f"{who} sent no seed; expected {SEED_BYTES} bytes")
    if not expected and seed is not None:
        raise HandshakeError(f"{who} sent a seed; expected none")
    if seed is not None and len(seed) != SEED_BYTES:
        raise HandshakeError(f"{who} sent a {len(seed)}-byte seed; expected {SEED_BYTES} bytes")
    window = meta["window"]
    if role == cfg.dealer_id and window is not None and window < MIN_WINDOW_BYTES:
        raise HandshakeError(f"{who} granted the dealer a window of {window} bytes; the minimum "
                             f"is {MIN_WINDOW_BYTES}")
    if role != cfg.dealer_id and window is not None:
        raise HandshakeError(f"{who} sent a window; only the dealer receives one")
    return seed


def _compare_config(theirs_json: str, their_hash: str, cfg: RunConfig, who: str) -> None:
    theirs = _json_object(theirs_json, who, "config")
    ours = flat_fields(json.loads(json.dumps(cfg.hash_fields(), sort_keys=True, default=str)))
    theirs_flat = flat_fields(theirs)
    missing = object()
    differences = []
    for key in sorted(set(ours) | set(theirs_flat)):
        here, there = ours.get(key, missing), theirs_flat.get(key, missing)
        if here is missing:
            differences.append(f"{key} is absent here, {there!r} there")
        elif there is missing:
            differences.append(f"{key} is {here!r} here, absent there")
        elif here != there:
            differences.append(f"{key} is {here!r} here, {there!r} there")
    if differences:
        more = f"; and {len(differences) - 4} more" if len(differences) > 5 else ""
        shown = differences[:4] if more else differences
        raise HandshakeError(f"config mismatch with {who}: {'; '.join(shown)}{more}")
    if their_hash != cfg.config_hash():
        raise HandshakeError(
            f"config hash mismatch with {who}: {cfg.config_hash()} here, {their_hash} there"
        )
